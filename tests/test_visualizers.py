"""Figures are pure functions of a recorded trace: their data equals the trace."""

import copy
import math
from pathlib import Path

import pytest

from packforcing.events import Block
from packforcing.events import block_events as blocks
from packforcing.memory import kv_curve, memory_table
from packforcing.tracefile import read_trace
from visualizers import calculator_figure, figures_at, memory_figure, occupancy_figure, rope_figure, selection_figure

TRACE = Path(__file__).parent / "data" / "trace_dynamic.jsonl"


@pytest.fixture(scope="module")
def events():
    return read_trace(TRACE)



def test_visualizers_never_import_gradio_or_torch():
    source = (Path(__file__).parent.parent / "visualizers" / "panels.py").read_text()
    assert "import gradio" not in source and "import torch" not in source


def test_occupancy_equals_partition_tokens_and_bound(events):
    fig = occupancy_figure(events)
    by_name = {t.name.split(" (")[0].split(",")[0]: t for t in fig.data}
    bs = blocks(events)
    assert list(by_name["sink"].y) == [b.tokens["sink"] for b in bs]
    assert list(by_name["recent"].y) == [b.tokens["recent"] for b in bs]
    # attended and held apart: the attended stack is what each block attends, never above
    # the bound; the archived (held, not attended) tokens are drawn on their own axis
    attended = [sum(t.y[i] for t in fig.data if t.stackgroup == "attended") for i in range(len(bs))]
    assert attended == [b.context_tokens for b in bs]
    held = [t for t in fig.data if t.stackgroup == "held"]
    assert [t.yaxis for t in held] == ["y2"] and list(held[0].y) == [b.tokens["mid_archived"] for b in bs]
    assert all(t.yaxis in (None, "y") for t in fig.data if t.stackgroup == "attended")
    bound = [t for t in fig.data if t.name.startswith("bounded context")][0]
    assert list(bound.y) == [events[0].geometry["bounded_context_tokens"]] * 2
    assert max(attended) <= bound.y[0] < max(a + h for a,
                                             h in zip(attended, held[0].y))  # stacked together they would cross it
    assert fig.layout.yaxis2.range[0] == 0  # the held axis starts at zero, even while nothing is held
    early = occupancy_figure([e for e in events if not isinstance(e, Block) or e.block < 3])
    assert list(early.layout.yaxis2.range) == [0, 1.15]


def test_selection_heatmap_equals_scores_and_marks_equal_mid_selected(events):
    fig = selection_figure(events)
    heat, marks = fig.data[0], fig.data[1]
    bs = [b for b in blocks(events) if b.mid_bank]
    assert list(heat.y) == [b.block for b in bs]
    for r, b in enumerate(bs):
        for c, m in enumerate(heat.x):
            expected = b.selection_scores.get(m, math.nan) if m in b.mid_bank else math.nan
            got = heat.z[r][c]
            assert (math.isnan(got) and math.isnan(expected)) or got == expected
    assert sorted(zip(marks.y, marks.x)) == sorted((b.block, m) for b in bs for m in b.mid_selected)


def test_selection_marks_follow_a_tampered_trace(events):
    tampered = copy.deepcopy(events)
    last = blocks(tampered)[-1]
    last.mid_selected = [last.mid_bank[0]]
    marks = selection_figure(tampered).data[1]
    assert [x for x, y in zip(marks.x, marks.y) if y == last.block] == [last.mid_bank[0]]


def test_rope_positions_equal_original_and_shifted(events):
    last = blocks(events)[-1]
    fig = rope_figure(events)
    attended = last.sink + last.mid_selected + last.recent + [last.current]
    originals = sorted(x for t in fig.data if t.y and t.y[0] == 1 and "original" in t.name for x in t.x)
    packed = sorted(x for t in fig.data if t.y and t.y[0] == 0 for x in t.x)
    assert originals == sorted(last.positions[m] for m in attended)
    assert packed == sorted(last.positions[m] + last.rope_shift[m] for m in attended)
    assert any(last.rope_shift[m] != 0 for m in attended)  # the trace has a gap to close


def test_memory_figure_equals_kv_bytes_and_projection(events):
    proj = kv_curve(30)
    fig = memory_figure(events, proj)
    bs = blocks(events)
    assert [round(v * 1024) for v in fig.data[0].y] == [b.kv_bytes for b in bs]
    assert [round(v * 1024) for v in fig.data[1].y] == [b.full_cache_bytes for b in bs]
    full = [t for t in fig.data if t.name == "real model, full"][0]
    assert full.y[-1] == pytest.approx(proj[-1]["full"] / 1e9)


def test_calculator_figure_reproduces_paper_full_cache():
    fig = calculator_figure(memory_table(120))
    values = dict(zip(fig.data[0].x, fig.data[0].y))
    assert values["full"] == pytest.approx(138.018816)
    assert values["fifo"] == pytest.approx(3.98721024)
    # a log axis labelled in whole decades of GB, reaching above the tallest bar's label
    axis = fig.layout.yaxis
    assert axis.type == "log" and list(axis.ticktext) == ["1 GB", "10 GB", "100 GB", "1,000 GB"]
    assert axis.range[0] <= 0 and axis.range[1] > math.log10(138.018816) + 0.3
    assert dict(zip(fig.data[0].x, fig.data[0].text))["full"] == "138 GB" and fig.data[0].cliponaxis is False


def test_figures_at_truncates(events):
    occ, sel, rope, mem = figures_at(events, upto_block=5)
    assert max(occ.data[0].x) == 5 and len(mem.data[0].y) == 6
    assert "block 5" in rope.layout.title.text
