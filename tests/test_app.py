"""The studio's handlers without a browser: inputs validated, runs stream, files written."""

import math
import os
import re

import pytest
from PIL import Image

from app.handlers import Run, build_config, calculator, load_trace, plain, replay_figures
from packforcing.config import PackForcingConfig

TRACE = os.path.join(os.path.dirname(__file__), "data", "trace_dynamic.jsonl")


def test_calculator_defaults_reproduce_the_paper():
    table, fig = calculator(832, 480, 16, 120, 8, 16, 24)
    assert "748,800 tokens = 138.02 GB" in table and "27,872 tokens" in table and "| 182 |" in table
    assert len(fig.data) == 1


def test_calculator_bad_input_is_a_message():
    table, _ = calculator(832, 480, 16, -5, 8, 16, 24)
    assert table.startswith("**Error:**") and "seconds=\\-5" in table


@pytest.mark.parametrize("args, message", [
    ((832, 480, 16, float("inf"), 8, 16, 24), "seconds=inf is out of range; allowed 0 to 86400"),
    ((832, 480, 16, 1e300, 8, 16, 24), "seconds=1e+300 is out of range; allowed 0 to 86400"),
    ((833, 480, 16, 120, 8, 16, 24), "width=833 is not a multiple of 16 (the VAE's 8 x the patch's 2); try 832 or 848"),
    ((832, 480, float("nan"), 120, 8, 16, 24), "fps=nan is out of range; allowed 1 to 240"),
    ((832, 480, 16, 120, 8, 1e30, 24), "top_k=1e+30 is out of range; allowed 0 to 64"),
    ((832, 480, 16, 120, None, 16, 24), "sink_frames must be a number; got None"),
])
def test_calculator_range_checks_every_number(args, message):
    table, _ = calculator(*args)
    assert table.startswith("**Error:**") and message in table.replace("\\", ""), table


@pytest.mark.parametrize("overrides, message", [
    ({"sink_frames": float("nan")}, "sink_frames=nan is out of range; allowed 0 to 32"),
    ({"top_k": float("inf")}, "top_k=inf is out of range; allowed 0 to 64"),
    ({"mid_capacity": 2.5}, "mid_capacity=2.5 is not a whole number"),
    ({"rope_repair": "yes"}, "rope_repair must be true or false; got 'yes'"),
])
def test_config_numbers_from_the_ui_are_range_checked(overrides, message):
    args = dict(model="tiny-random", sink_frames=8, top_k=16, mid_capacity=24, policy="dynamic", rope_repair=True,
                compression="lr")
    with pytest.raises(ValueError, match=re.escape(message)):
        build_config(**{**args, **overrides})


@pytest.mark.parametrize("seed, seconds, message", [
    (10**30, 4, "seed=1e+30 is out of range; allowed 0 to 4,294,967,295"),
    (-1, 4, "seed=-1 is out of range"),
    (0, float("nan"), "duration=nan s is out of range"),
    (0, 10**400, "duration=a number of about 401 digits is not a number of seconds"),
])
def test_seed_and_duration_are_range_checked(seed, seconds, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Run("tiny-random", "a red circle", seconds, seed, PackForcingConfig())


@pytest.mark.parametrize("model", [None, ["embedded"], "<b>x</b>"])
def test_unknown_models_are_named_plainly(model):
    with pytest.raises(ValueError, match="is not available here; choose one of") as error:
        Run(model, "a red circle", 4, 0, PackForcingConfig())
    assert "object at 0x" not in str(error.value)


def test_user_text_is_escaped_for_markdown():
    text = plain("<img src=x> **bold** [a](http://x) $x$ `c`\nnext")
    assert "<" not in text and ">" not in text and "**" not in text and "](" not in text and "\n" not in text
    # every markdown character is backslash-escaped, so it renders as itself
    assert text == "&lt;img src=x&gt; \\*\\*bold\\*\\* \\[a\\]\\(http\\://x\\) \\$x\\$ \\`c\\` next"


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
    run = Run("tiny-random", "a red circle", 3, 0, PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=2),
              workdir=str(tmp_path), panel_seconds=0)
    updates = list(run.updates())
    blocks = [u for u in updates if "segment" in u]
    assert len(blocks) == 3 and all(os.path.getsize(u["segment"]) > 0 and u["segment"].endswith(".ts") for u in blocks)
    assert Image.open(blocks[0]["preview"]).size == (256,
                                                     256) and os.path.dirname(blocks[0]["preview"]) == str(tmp_path)
    panels = [u for u in updates if "figures" in u]
    assert len(panels) == 3 and all(len(u["figures"]) == 4 for u in panels)
    # each block's segment goes out before its panels are drawn
    assert [i + 1 for i, u in enumerate(updates) if "segment" in u] == [i for i, u in enumerate(updates)
                                                                         if "figures" in u]
    last = updates[-1]
    assert last["done"] and last["status"].startswith("Done: 3 blocks")
    assert os.path.getsize(last["video"]) > 0 and load_trace(last["trace"])[1] == 2


def test_panels_wait_their_interval_and_always_show_the_last_block(tmp_path):
    config = PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=2)
    updates = list(Run("tiny-random", "a red circle", 3, 0, config, workdir=str(tmp_path / "a"),
                       panel_seconds=math.inf).updates())
    kinds = ["figures" if "figures" in u else "segment" for u in updates if "segment" in u or "figures" in u]
    # the first block draws (nothing is drawn yet), the second waits, the last draws
    assert kinds == ["segment", "figures", "segment", "segment", "figures"]
    assert all(u["narration"] for u in updates if "segment" in u)
    run = Run("tiny-random", "a red circle", 8, 0, config, workdir=str(tmp_path / "b"), panel_seconds=math.inf)
    for update in run.updates():
        if update.get("segment", "").endswith("segment_0001.ts"):
            run.stop_requested.set()
    # stopped after block 1, whose panels had waited: the end brings them
    assert update["status"].startswith("Stopped: 2 blocks") and "block 1:" in update["figures"][2].layout.title.text


def test_stop_flag_ends_run_after_the_block_in_flight(tmp_path):
    run = Run("tiny-random", "a red circle", 8, 0, PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=2),
              workdir=str(tmp_path))
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
    with pytest.raises(ValueError, match="line 1 is not JSON"):
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
    none = "n/a (no source in the mid bank)"
    assert f"| revisit source attended (block one loop back) | {none} | {none} |" in table
    assert all(c is None for _, _, c in steps[:-1])


def test_ablation_rejects_unknown_configuration():
    from app.handlers import AblationRun

    with pytest.raises(ValueError, match="configuration 'bogus' is not known; choose one of window"):
        AblationRun("tiny-random", "a red circle", 3, 0, "window", "bogus")


def test_a_session_keeps_its_newest_run_folder_and_loses_all_when_it_ends(tmp_path, monkeypatch):
    from app import sessions

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    made = [sessions.new_run_dir("s1") for _ in range(5)]
    other = sessions.new_run_dir("s2")
    assert [os.path.isdir(d) for d in made] == [False, False, False, True, True] and os.path.isdir(other)
    flag = sessions.begin_run("s1", "generate")
    sessions.end_session("s1")  # the tab closes while a run still writes into its folder
    assert flag.is_set() and os.path.isdir(made[-1])
    sessions.end_run("s1", "generate", flag)
    assert not any(os.path.isdir(d) for d in made) and os.path.isdir(other)


def test_stop_before_the_run_starts_reaches_it():
    from app import sessions

    sessions.arm_stop("s3", "generate")  # the run was submitted
    sessions.request_stop("s3", "generate")  # Stop, while it waits in the queue
    flag = sessions.begin_run("s3", "generate")  # the run starts
    assert flag.is_set()
    sessions.end_run("s3", "generate", flag)
    assert not sessions.begin_run("s3", "generate").is_set()  # the next run starts afresh


def test_a_refused_request_retires_no_run_folder(tmp_path, monkeypatch):
    import types

    from app import callbacks, sessions

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    older, newest = sessions.new_run_dir("s4"), sessions.new_run_dir("s4")
    request = types.SimpleNamespace(session_hash="s4")
    updates = list(callbacks.generate("tiny-random", "", 2, 0, 4, 2, 4, "dynamic", True, "lr", "", request=request))
    assert "prompt is empty" in updates[-1][6]
    assert os.path.isdir(older) and os.path.isdir(newest) and len(list(tmp_path.glob("packforcing-run-*"))) == 2


def test_the_default_model_loads_in_the_background_when_the_server_starts(monkeypatch):
    import runpy
    import time

    from app import handlers
    from packforcing import registry

    loaded = []
    monkeypatch.setattr(registry, "default_model", lambda: "tiny-random")
    monkeypatch.setattr(handlers, "get_pipeline", loaded.append)  # what app.py imports and calls
    app_py = str(handlers.__file__).replace("app/handlers.py", "app.py")
    monkeypatch.delenv("PACKFORCING_PRELOAD", raising=False)
    start = runpy.run_path(app_py)  # not as __main__: the page is built, nothing is served
    assert loaded == []  # building the page loads nothing
    start["preload_default"]()
    deadline = time.time() + 30
    while not loaded and time.time() < deadline:  # loaded by a thread of its own
        time.sleep(0.01)
    assert loaded == ["tiny-random"]
    monkeypatch.setenv("PACKFORCING_PRELOAD", "")  # named (even empty): only what it names, at import
    runpy.run_path(app_py)["preload_default"]()
    time.sleep(0.5)  # a thread started here would have loaded by now
    assert loaded == ["tiny-random"]
