"""An uploaded trace is checked before anything is built from it: its size, every field's
type, and bounds taken from its own run event and block numbers. Each bad file gets one
plain message (line, field, what is allowed) and no server path."""

import json
import os
import tracemalloc

import pytest

from app.handlers import load_trace, replay_figures
from packforcing.tracefile import MAX_TRACE_BYTES, read_trace

TRACE = os.path.join(os.path.dirname(__file__), "data", "trace_dynamic.jsonl")


def _lines():
    with open(TRACE) as f:
        return [json.loads(line) for line in f]


def _write(tmp_path, lines, name="t.jsonl") -> str:
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def _with(tmp_path, line: int, **changes) -> str:
    lines = _lines()
    lines[line] = {**lines[line], **changes}
    return _write(tmp_path, lines)


def test_the_shipped_trace_reads_as_before():
    events = read_trace(TRACE)
    assert len(events) == 22 and events[1].block == 0 and events[-2].block == 19
    assert events[-2].selection_scores == {int(k): v for k, v in _lines()[-2]["selection_scores"].items()}


@pytest.mark.parametrize("line, changes, message", [
    (1, {"tokens": "abc"}, "line 2 (block 0): tokens must be an object with keys among sink"),
    (12, {"selection_scores": [1, 2]},
     "line 13 (block 11): selection_scores must be an object from block number to number; got a list"),
    (12, {"mid_bank": 7}, "line 13 (block 11): mid_bank must be a list of block numbers; got 7"),
    (3, {"block": 10**9}, "line 4 (block 2): block=1000000000 is out of range; allowed 0 to 256"),
    (3, {"block": -5}, "line 4 (block 2): block=-5 is out of range"),
    (3, {"block": 2.5}, "line 4 (block 2): block=2.5 is not a whole number"),
    (3, {"block": 5}, "line 4 (block 2): block=5 but this is block 2; blocks are numbered 0, 1, 2, ... in order"),
    (12, {"mid_bank": list(range(5000))},
     "line 13 (block 11): mid_bank has 5,000 blocks; this run holds at most 4 there"),
    (12, {"mid_bank": [3, 99]}, "line 13 (block 11): a block number in mid_bank=99 is out of range; allowed 0 to 11"),
    (2, {"video_seconds": 1e5}, "line 3 (block 1): video_seconds=100000 is out of range; allowed 0 to 2"),
    (2, {"video_seconds": float("nan")}, "line 3 (block 1): video_seconds=nan is out of range"),
    (12, {"rope_shift": {"999": 1.0}},
     "line 13 (block 11): rope_shift has the key '999', not a block this block holds"),
    (0, {"num_blocks": "twenty"}, "line 1: num_blocks must be a number; got 'twenty'"),
    (0, {"config": {"policy": "lru"}}, "line 1: config is not valid: policy='lru' is not allowed"),
    (0, {"geometry": {"fps": 16}}, "line 1: the field 'tokens_per_latent_frame' is missing"),
])
def test_malformed_fields_are_named(tmp_path, line, changes, message):
    with pytest.raises(ValueError) as error:
        read_trace(_with(tmp_path, line, **changes))
    assert str(error.value).startswith(message), str(error.value)
    assert str(tmp_path) not in str(error.value)


@pytest.mark.parametrize("lines, message", [
    (["not json"], "line 1 is not JSON"),
    (["[" * 100_000 + "]" * 100_000], "line 1 is nested too deeply to be a trace event"),
    ([{"type": "block"}], "line 1 is a 'block' event; a trace starts with its 'run' event"),
    ([5], "line 1 is not a trace event (a JSON int)"),
    ([], "the file is empty"),
])
def test_files_that_are_not_traces(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_trace(_write(tmp_path, lines))


def test_size_is_capped_before_reading(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_bytes(b" " * (MAX_TRACE_BYTES + 1))
    with pytest.raises(ValueError, match=r"the file is 4.0 MB; a trace is at most 4 MB"):
        read_trace(str(big))


def test_a_trace_bomb_is_refused_before_anything_is_built(tmp_path):
    """1.8 KB claiming 5e5 s of video: before, +840 MB of figures (bench/hardening.py
    times it on a running server)."""
    lines = _lines()[:3]
    lines[2]["video_seconds"] = 5e5
    path = _write(tmp_path, lines)
    tracemalloc.start()
    with pytest.raises(ValueError, match="video_seconds=500000 is out of range"):
        load_trace(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5e6


def test_replay_draws_only_the_real_blocks_and_checks_the_slider():
    events, last = load_trace(TRACE)
    assert last == 19
    memory = replay_figures(events, 5)[3]
    projected = memory.data[-1]
    assert max(projected.x) == 20.0  # 20 blocks of 1 s: the projection spans the trace, nothing more
    for bad in (float("nan"), 20, -1, 2.5):
        with pytest.raises(ValueError, match="block="):
            replay_figures(events, bad)


def test_a_bad_upload_clears_the_replay_and_says_why(tmp_path):
    from app.callbacks import on_trace_upload

    events, slider, status, *figures, narration = on_trace_upload(_with(tmp_path, 1, tokens="abc"))
    assert events == [] and slider["value"] == 0 and narration == ""
    assert status.startswith("⚠️ **Error:** line 2 \\(block 0\\)\\: tokens must be an object")
    assert str(tmp_path) not in status
    assert all(fig.layout.annotations[0].text == "Upload a trace to replay it" for fig in figures)
    events, slider, status, *_, narration = on_trace_upload(TRACE)
    assert len(events) == 22 and slider["value"] == 19 and status == "Loaded 20 blocks (0 to 19)."
    assert narration.startswith("After block 19, mid block 14, the oldest, left the cache")


def test_a_camera_entry_is_kept_and_checked(tmp_path):
    camera = {"direction": "left", "x": 12.5, "end": 10.0, "period": 64.0, "view": 16.0}
    assert read_trace(_with(tmp_path, 1, camera=camera))[1].camera == camera
    with pytest.raises(ValueError, match=r"line 2 \(block 0\): camera must be an object with a direction"):
        read_trace(_with(tmp_path, 1, camera={"direction": "<img src=x>", "x": 1}))
    with pytest.raises(ValueError, match=r"camera\[x\]=inf is out of range"):
        read_trace(_with(tmp_path, 1, camera={"direction": "left", "x": float("inf")}))
