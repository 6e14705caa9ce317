"""The panels mark a prompt switch from the trace alone: a line on the occupancy and memory
charts where the new prompt starts, the re-written blocks ringed on the RoPE view with
the cost, the selection change in the top-k title; the replayed trace keeps them."""

from pathlib import Path

import pytest

from packforcing.events import Block, Switch, write_jsonl
from packforcing.tracefile import read_trace
from visualizers import figures_at, memory_figure, occupancy_figure, rope_figure, selection_figure

TRACE = Path(__file__).parent / "data" / "trace_dynamic.jsonl"
PROMPT = "a <b>green</b> square"  # user text: shown as text, never as markup


@pytest.fixture(scope="module")
def events():
    """The recorded 20-block trace with a switch before block 10 that re-wrote blocks 0, 1 and 9."""
    events = read_trace(TRACE)
    at = next(i for i, e in enumerate(events) if isinstance(e, Block) and e.block == 10)
    return events[:at] + [Switch(block=10, prompt=PROMPT, recache="sink+recent", recached=[0, 1, 9],
                                 seconds=0.25)] + events[at:]


def switch_lines(fig):
    return sorted({s.x0 for s in fig.layout.shapes if s.name == "switch"})


def test_occupancy_and_memory_draw_a_line_at_the_switch(events):
    assert switch_lines(occupancy_figure(events)) == [9.5]  # between the last old block and the first new one
    seconds = next(e.video_seconds for e in events if isinstance(e, Block) and e.block == 9)
    assert switch_lines(memory_figure(events)) == [seconds]
    texts = [a.text for a in occupancy_figure(events).layout.annotations]
    assert "→ a &lt;b&gt;green&lt;/b&gt; square" in texts and not any("<b>" in t for t in texts)


def test_no_switch_no_line(events):
    plain = [e for e in events if not isinstance(e, Switch)]
    assert switch_lines(occupancy_figure(plain)) == switch_lines(memory_figure(plain)) == []
    assert "switch" not in rope_figure(plain, 12).layout.title.text


def test_rope_view_rings_the_recached_blocks_with_the_cost(events):
    fig = rope_figure(events, 12)
    ring = [t for t in fig.data if t.name.startswith("re-cached")]
    block = next(e for e in events if isinstance(e, Block) and e.block == 12)
    shown = [m for m in (0, 1, 9) if m in block.positions]
    assert len(ring) == 1 and list(ring[0].x) == [block.positions[m] for m in shown]
    assert "switch before block 10: re-cached 3 blocks in 0.25 s" in fig.layout.title.text
    before = rope_figure(events, 9)  # the switch has not happened yet at block 9
    assert not [t for t in before.data if t.name.startswith("re-cached")] and "switch" not in before.layout.title.text


def test_selection_title_carries_the_mean_selection_change(events):
    blocks = [e for e in events if isinstance(e, Block)]
    for b, change in zip(blocks, [None] * 8 + [0.5, 0.0, 1.0] + [0.0] * 9):
        b.selection_change = change
    title = selection_figure(events).layout.title.text
    assert "<br>selection change: 12% of the selected blocks new per block (last: 0%)" in title  # (0.5 + 1) / 12


def test_replayed_trace_keeps_the_switch(tmp_path, events):
    blocks = [e for e in events if isinstance(e, Block)]
    blocks[10].prompt, blocks[10].selection_change = PROMPT, 0.5
    path = tmp_path / "t.jsonl"
    write_jsonl(events, path)
    replayed = read_trace(path)
    assert [(s.block, s.prompt, s.recached, s.seconds) for s in replayed
            if isinstance(s, Switch)] == [(10, PROMPT, [0, 1, 9], 0.25)]
    again = next(e for e in replayed if isinstance(e, Block) and e.block == 10)
    assert (again.prompt, again.selection_change) == (PROMPT, 0.5)
    occupancy, _, _, memory = figures_at(replayed, 12)
    assert switch_lines(occupancy) == [9.5] and len(switch_lines(memory)) == 1
    occupancy, *_ = figures_at(replayed, 9)  # scrubbed back before the switch
    assert switch_lines(occupancy) == []


@pytest.mark.parametrize("line, message", [
    ('"block": 3, "prompt": "x", "recache": "all", "recached": [], "seconds": 0.1', r"block=3 comes before block 10"),
    ('"block": 10, "prompt": "x", "recache": "most", "recached": [], "seconds": 0.1', r"recache='most' is not allowed"),
    ('"block": 10, "prompt": "x", "recache": "all", "recached": [12], "seconds": 0.1', r"a block number in recached"),
    # a contradiction: no re-cache, yet blocks re-written
    ('"block": 10, "prompt": "x", "recache": "none", "recached": [0, 1, 2], "seconds": 0.1',
     r"recache is 'none' but recached lists 3 blocks"),
])
def test_a_bad_switch_line_names_the_field(tmp_path, line, message):
    path = tmp_path / "t.jsonl"
    lines = TRACE.read_text().splitlines()  # the run, then blocks 0..19: block 10 is line 12
    path.write_text("\n".join(lines[:11] + ["{" + '"type": "switch", ' + line + "}"] + lines[11:]) + "\n")
    with pytest.raises(ValueError, match=f"line 12: .*{message}"):
        read_trace(path)
