"""bench/gpu.py runs end to end (tiny random model on the CPU) and reports every column
of the paper's efficiency table."""

import importlib.util
import json
from pathlib import Path

import pytest


def _load_bench(name="gpu"):
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_smoke_on_cpu(capsys):
    bench = _load_bench()
    bench.main(["--tiny", "--device", "cpu", "--seconds", "1", "--policies", "window,dynamic"])
    out = json.loads(capsys.readouterr().out)
    assert out["weights"] == "random (tiny)" and out["gpu"] == "cpu"
    assert set(out["policies"]) == {"window", "dynamic"}
    for row in out["policies"].values():
        assert row["frames"] > 0 and row["kv_bytes"] > 0
        assert row["fps_without_decode"] > row["fps_with_decode"] > 0
        assert row["first_frame_s"] > 0
    assert out["dynamic_vs_window_fps"] > 0
    assert out["paper_a100"]["dynamic"] == {"fps": 15, "kv_gb": 4.2, "peak_gb": 27}


def test_gpu_bench_rejects_unknown_policy():
    bench = _load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--device", "cpu", "--policies", "window,lru"])
