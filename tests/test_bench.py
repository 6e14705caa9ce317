"""bench/gpu.py runs end to end (tiny random model on the CPU) and reports every column
of the paper's efficiency table; bench/recall.py's selections attend what they claim."""

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
    bench.main(["--tiny", "--device", "cpu", "--seconds", "1", "--eager-seconds", "1", "--policies", "window,dynamic",
                "--backend", "aot_eager", "--sections", "eager"])
    out = json.loads(capsys.readouterr().out)
    assert out["weights"] == "random (tiny)" and out["gpu"] == "cpu"
    assert set(out["policies"]) == {"window", "dynamic"} and out["skipped"] == []
    for row in out["policies"].values():
        assert row["frames"] == 13 and row["kv_gb"] > 0 and row["first_frame_s"] > 0
        assert row["fps_with_decode"] > 0 and row["new_compiled_graphs"] == 0  # compiled while warming up
    assert out["compile"]["compiled_graphs"] > 0 and out["compile"]["compile_and_warmup_s"] > 0
    assert out["policies"]["dynamic"]["psnr_vs_eager_db"][0] > 60  # the same frames, up to float rounding
    assert out["dynamic_vs_window_fps"] > 0 and out["fast_vs_eager_fps_same_blocks"]["blocks"] == 1
    assert out["sdpa"]["default"] == "flash_for_cpu"
    assert out["paper_a100"]["dynamic"] == {"fps": 15, "kv_gb": 4.2, "peak_gb": 27}
    assert out["peers"]["Hybrid Forcing"] == {"gpu": "H100", "fps": 29.5}


def test_gpu_bench_rejects_unknown_policy():
    bench = _load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--device", "cpu", "--policies", "window,lru"])
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--device", "cpu", "--sections", "eager,everything"])


def test_recall_probe_oracle_attends_the_source_and_anti_never_does():
    import random

    import torch

    from packforcing.backbones.embedded import load_embedded
    from packforcing.pipeline import EMBEDDED_DIR
    from packforcing.train import world_batch
    from packforcing.world.vocab import tokenize

    recall = _load_bench("recall")
    backbone = load_embedded(EMBEDDED_DIR)
    prompts, pixels, latent = world_batch(random.Random(0), 1, 12, backbone.codec)
    with torch.no_grad():
        text = backbone.text_encoder(tokenize(prompts))
    runs = {s: recall.probe(backbone, text, pixels, latent, s, 0.7, 0) for s in ("oracle", "anti", "window")}
    # blocks 10-11 revisit blocks 2-3, which only the mid bank holds
    assert runs["oracle"][1][10:] == [True, True] and runs["anti"][1][10:] == [False, False]
    assert runs["oracle"][1][:10] == [None] * 10
    assert runs["oracle"][0][:10] == runs["anti"][0][:10]  # same noise, same selections before block 10
    assert runs["window"][0][8] != runs["oracle"][0][8]  # no mid block attended: block 8 changes


def test_recall_probe_swaps_sources_exactly_and_samples_revisits():
    """with_foreign_sources replaces exactly the sink and the revisit sources (blocks
    0-5) with another clip's (clip i gets clip i-1's); the sampled mode leaves the history-building losses
    untouched and switches to sampled errors from `sample_from` on."""
    import random

    import torch

    from packforcing.backbones.embedded import load_embedded
    from packforcing.pipeline import EMBEDDED_DIR
    from packforcing.train import world_batch
    from packforcing.world.vocab import tokenize

    recall = _load_bench("recall")
    backbone = load_embedded(EMBEDDED_DIR)
    prompts, pixels, latent = world_batch(random.Random(0), 2, 9, backbone.codec)
    fpx, flat = recall.with_foreign_sources(pixels, latent, 8, 4, 16)
    assert torch.equal(flat[0, :, :24], latent[1, :, :24]) and torch.equal(flat[1, :, :24], latent[0, :, :24])
    assert torch.equal(flat[:, :, 24:], latent[:, :, 24:]) and torch.equal(fpx[0, :, :96], pixels[1, :, :96])
    assert torch.equal(fpx[:, :, 96:], pixels[:, :, 96:])
    with torch.no_grad():
        text = backbone.text_encoder(tokenize(prompts))
    taught, _ = recall.probe(backbone, text, pixels, latent, "dynamic", 0.7, 0)
    samples = {}
    sampled, _ = recall.probe(backbone, text, pixels, latent, "dynamic", 0.7, 0, sample_from=8, samples=samples)
    again, _ = recall.probe(backbone, text, pixels, latent, "dynamic", 0.7, 0, sample_from=8)
    assert sampled[:8] == taught[:8] and sampled[8] != taught[8] and sampled == again
    assert list(samples) == [8] and samples[8].shape == (2, 16, 4, 16, 16)
    assert sampled[8] == pytest.approx(recall._err(samples[8], latent, 8, 4))
    assert recall._err(samples[8], latent, 8, 4) != pytest.approx(recall._err(samples[8], latent.roll(1, dims=0), 8, 4))
