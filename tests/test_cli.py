"""The command line: generate writes a video and a trace with the chosen config; bad
input exits with status 2 and a message that names the bad value."""

import json

import pytest

from packforcing.cli import main
from packforcing.events import event_to_dict
from packforcing.tracefile import read_trace


def test_generate_writes_video_and_trace_with_the_chosen_config(tmp_path, capsys):
    out, trace = tmp_path / "v.mp4", tmp_path / "t.jsonl"
    code = main(["generate", "--model", "embedded", "--prompt", "a red circle and a blue square", "--seconds", "2",
                 "--out", str(out), "--trace", str(trace), "--guidance-scale", "2", "--top-k", "2"])
    assert code == 0 and out.stat().st_size > 0
    events = [event_to_dict(e) for e in read_trace(trace)]
    start = events[0]
    assert start["config"]["guidance_scale"] == 2.0 and start["config"]["top_k"] == 2
    assert start["config"]["mid_capacity"] == 12  # unset options keep the model's own default
    assert "understood: red circle blue square" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--policy", "lru"], "policy='lru'"),
    (["--guidance-scale", "-1"], "guidance_scale=-1.0"),
    (["--seconds", "0"], "duration=0 s is out of range"),
    (["--prompt", ""], "prompt is empty"),
    # the shipped model takes none: said before the path is read (tests/test_camera.py reads paths)
    (["--camera", "up:3"], "has no camera to steer"),
])
def test_bad_input_exits_2_and_names_the_value(tmp_path, capsys, args, message):
    base = ["generate", "--model", "embedded", "--prompt", "a red circle", "--seconds", "2", "--out",
            str(tmp_path / "v.mp4")]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "v.mp4").exists()


def test_switch_and_no_recache_reach_the_trace(tmp_path):
    trace = tmp_path / "t.jsonl"
    code = main(["generate", "--model", "embedded", "--prompt", "a red circle", "--seconds", "2", "--switch",
                 "1:a green square",
                 "--no-recache", "--out", str(tmp_path / "v.mp4"), "--trace", str(trace)])
    assert code == 0
    events = [event_to_dict(e) for e in read_trace(trace)]
    assert events[0]["config"]["recache"] == "none"
    switch = [e for e in events if e["type"] == "switch"]
    assert [(s["block"], s["prompt"], s["recached"]) for s in switch] == [(1, "a green square", [])]
    assert [e["prompt"] for e in events if e["type"] == "block"] == ["a red circle", "a green square"]


@pytest.mark.parametrize("args, message", [
    (["--switch", "soon:a green square"], "--switch 'soon:a green square' is not SECONDS:PROMPT"),
    (["--switch", "5:a green square"], "switch at 5 s is past the end of the 2-s video"),
    (["--recache", "most"], "recache='most' is not allowed; choose one of none, recent, sink+recent, all"),
    (["--recache", "all", "--no-recache"], "--no-recache contradicts --recache all"),
])
def test_bad_switch_options_exit_2_and_name_the_value(tmp_path, capsys, args, message):
    base = ["generate", "--model", "embedded", "--prompt", "a red circle", "--seconds", "2", "--out",
            str(tmp_path / "v.mp4")]
    assert main(base + args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize("args, message", [
    (["--out", "/nonexistent-dir/a.mp4"], "--out /nonexistent-dir/a.mp4: the folder /nonexistent-dir does not exist"),
    (["--out", "clip.txt"], "--out clip.txt must end in one of .mp4, .mkv, .mov, .ts"),
    (["--trace", "/nonexistent-dir/t.jsonl"],
     "--trace /nonexistent-dir/t.jsonl: the folder /nonexistent-dir does not exist"),
])
def test_output_paths_are_checked_before_the_model_loads(tmp_path, capsys, monkeypatch, args, message):
    import packforcing.pipeline

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(packforcing.pipeline.PackForcingPipeline, "from_name", no_model)
    base = ["generate", "--model", "embedded", "--prompt", "a red circle", "--seconds", "2", "--out",
            str(tmp_path / "v.mp4")]
    assert main(base + args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--width", "833"], "width=833 is not a multiple of 16 (the VAE's 8 x the patch's 2); try 832 or 848"),
    (["--height", "470"], "height=470 is not a multiple of 16"),
    (["--seconds", "1e300"], "seconds=1e+300 is out of range; allowed 0 to 86400"),
    (["--seconds", "nan"], "seconds=nan is out of range"),
])
def test_memory_rejects_what_the_grid_cannot_take(capsys, args, message):
    assert main(["memory", "--seconds", "120", *args]) == 2
    assert message in capsys.readouterr().err


def test_memory_at_a_multiple_of_16_still_computes(capsys):
    assert main(["memory", "--seconds", "120", "--width", "848", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens_per_latent_frame"] == 30 * 53  # (480/16) x (848/16)
