"""The studio's handlers without a browser: inputs validated, runs stream, files written."""

import os

import pytest

from app.handlers import Run, build_config, calculator, load_trace, replay_figures
from packforcing.config import PackForcingConfig

TRACE = os.path.join(os.path.dirname(__file__), "data", "trace_dynamic.jsonl")


def test_calculator_defaults_reproduce_the_paper():
    table, fig = calculator(832, 480, 16, 120, 8, 16, 24)
    assert "748,800 tokens = 138.02 GB" in table and "27,872 tokens" in table and "| 182 |" in table
    assert len(fig.data) == 1


def test_calculator_bad_input_is_a_message():
    table, _ = calculator(832, 480, 16, -5, 8, 16, 24)
    assert table.startswith("**Error:**") and "seconds=-5" in table


@pytest.mark.parametrize(
    "prompt, seconds, overrides, message",
    [
        ("", 4, {}, "prompt is empty"),
        ("x" * 2000, 4, {}, "2,000 characters"),
        ("a red circle", 500, {}, "duration=500"),
        ("a red circle", 4, {"top_k": 80, "mid_capacity": 100}, "top_k=80"),
        ("a red circle", 2, {"sink_frames": 16}, "sink_frames=16 is larger than the whole video"),
    ],
)
def test_bad_requests_get_clear_errors(prompt, seconds, overrides, message):
    config = PackForcingConfig(**overrides)
    with pytest.raises(ValueError, match=message):
        Run("tiny-random", prompt, seconds, 0, config)


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="sink_frames=6"):
        build_config("tiny-random", 6, 16, 24, "dynamic", True, "lr")


def test_run_streams_segments_figures_and_final_files(tmp_path):
    run = Run("tiny-random", "a red circle", 3, 0, PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=2), workdir=str(tmp_path))
    updates = list(run.updates())
    blocks = [u for u in updates if "segment" in u]
    assert len(blocks) == 3 and all(os.path.getsize(u["segment"]) > 0 and u["segment"].endswith(".ts") for u in blocks)
    assert blocks[0]["preview"].shape == (256, 256, 3)
    assert all(len(u["figures"]) == 4 for u in blocks)
    last = updates[-1]
    assert last["done"] and last["status"].startswith("Done: 3 blocks")
    assert os.path.getsize(last["video"]) > 0 and load_trace(last["trace"])[1] == 2


def test_stop_flag_ends_run_after_the_block_in_flight(tmp_path):
    run = Run("tiny-random", "a red circle", 8, 0, PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=2), workdir=str(tmp_path))
    seen = 0
    for update in run.updates():
        if "segment" in update:
            seen += 1
            run.stop_requested.set()
    assert seen == 1 and update["status"].startswith("Stopped: 1 blocks")


def test_trace_replay_and_malformed_files(tmp_path):
    events, last = load_trace(TRACE)
    assert last == 19 and len(replay_figures(events, 5)) == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not a trace\n")
    with pytest.raises(ValueError, match="line 1 is not a valid trace event"):
        load_trace(str(bad))
    with pytest.raises(ValueError, match="no file"):
        load_trace(None)


def test_ablation_runs_two_configs_in_lockstep_on_shared_weights():
    from app.handlers import AblationRun

    lab = AblationRun("embedded", "a red circle, camera pans right", 3, 0, "window", "full")
    steps = list(lab.updates())
    both = [(a, b) for a, b, _ in steps if a and b and "segment" in a and "segment" in b]
    assert len(both) == 3  # every block streams on both sides, side by side
    assert lab.runs[0].pipe is lab.runs[1].pipe  # one model, two caches
    # same prompt and seed: the first block (no memory involved yet) is the same video
    assert (lab.runs[0].frames[0] == lab.runs[1].frames[0]).all()
    table = steps[-1][2]
    assert table.startswith("| | window | full |") and "prompt faithfulness" in table and "KV bytes at the end" in table
    # 3 s: no block's revisit source (8 blocks back) is in the mid bank yet
    assert "| revisit source attended (block one loop back) | n/a (no source in the mid bank) | n/a (no source in the mid bank) |" in table
    assert all(c is None for _, _, c in steps[:-1])


def test_ablation_rejects_unknown_configuration():
    from app.handlers import AblationRun

    with pytest.raises(ValueError, match="configuration 'bogus' is not known; choose one of window"):
        AblationRun("tiny-random", "a red circle", 3, 0, "window", "bogus")
