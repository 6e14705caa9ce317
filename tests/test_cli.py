"""The command line: generate writes a video and a trace with the chosen config; bad
input exits with status 2 and a message that names the bad value."""

import json

import pytest

from packforcing.cli import main


def test_generate_writes_video_and_trace_with_the_chosen_config(tmp_path, capsys):
    out, trace = tmp_path / "v.mp4", tmp_path / "t.jsonl"
    code = main(["generate", "--model", "embedded", "--prompt", "a red circle and a blue square", "--seconds", "2",
                 "--out", str(out), "--trace", str(trace), "--guidance-scale", "2", "--top-k", "2"])
    assert code == 0 and out.stat().st_size > 0
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    start = events[0]
    assert start["config"]["guidance_scale"] == 2.0 and start["config"]["top_k"] == 2
    assert start["config"]["mid_capacity"] == 12  # unset options keep the model's own default
    assert "understood: red circle blue square" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--policy", "lru"], "policy='lru'"),
    (["--guidance-scale", "-1"], "guidance_scale=-1.0"),
    (["--seconds", "0"], "duration=0 s is out of range"),
    (["--prompt", ""], "prompt is empty"),
    (["--camera", "up:3"], "camera segment up:3: direction 'up' is not allowed; choose one of left, still, right"),
])
def test_bad_input_exits_2_and_names_the_value(tmp_path, capsys, args, message):
    base = ["generate", "--model", "embedded", "--prompt", "a red circle", "--seconds", "2", "--out", str(tmp_path / "v.mp4")]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "v.mp4").exists()
