"""Hostile but fair input to the panels: a run or a trace with many prompt switches costs
time in proportion to what it holds (plotly's one-at-a-time shapes made it grow with the
square of the switches: 40 switches took 5.4 s to draw, 20 took 1.4 s)."""

import time
from pathlib import Path

from app.handlers import load_trace, replay_figures
from packforcing.events import Block, Switch, write_jsonl
from packforcing.tracefile import read_trace
from visualizers import figures_at

TRACE = Path(__file__).parent / "data" / "trace_dynamic.jsonl"  # 20 blocks


def with_switches(n: int) -> list:
    """The recorded trace with `n` switches spread over blocks 1..19 (a run switching at every block, and more)."""
    out = []
    for e in read_trace(TRACE):
        if isinstance(e, Block) and e.block >= 1:
            k = n // 19 + (e.block <= n % 19)  # 200: 11 before blocks 1..10, 10 before 11..19
            out += [Switch(block=e.block, prompt=f"prompt {e.block}.{i}", recache="none", recached=[], seconds=0.0)
                    for i in range(k)]
        out.append(e)
    assert sum(isinstance(e, Switch) for e in out) == n
    return out


def _best_of_three(fn) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def test_drawing_200_switches_costs_about_what_20_do():
    few, many = with_switches(20), with_switches(200)
    ratio = _best_of_three(lambda: figures_at(many)) / _best_of_three(lambda: figures_at(few))
    # today about 1.1x alone (2.1x seen beside another test worker); one shape at a time, 30x and more
    assert ratio < 3, f"200 switches cost {ratio:.1f}x what 20 do"
    occupancy = figures_at(many)[0]
    lines = sorted(s.x0 for s in occupancy.layout.shapes if s.name == "switch")
    assert lines == [b - 0.5 for b in range(1, 20)]  # one line per block a new prompt starts at
    assert "prompt 19.9" in occupancy.layout.annotations[-1].text  # labelled with the prompt in force there


def test_a_200_switch_trace_loads_and_replays_in_under_two_seconds(tmp_path):
    path = tmp_path / "switches.jsonl"
    write_jsonl(with_switches(200), path)
    started = time.perf_counter()
    events, last = load_trace(str(path))
    replay_figures(events, last)
    assert time.perf_counter() - started < 2.0
    assert last == 19 and sum(isinstance(e, Switch) for e in events) == 200


def test_a_long_camera_path_is_quoted_short():
    from packforcing.camera import CameraPath

    try:
        CameraPath.parse("x" * 20000)
    except ValueError as e:
        assert len(str(e)) < 200 and "'xxxxxxxx" in str(e)
    else:
        raise AssertionError("a path of 20,000 x's was accepted")
