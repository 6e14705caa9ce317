"""Prompt switches and selection stability on the panels (pure functions of trace events).

A switch is a dotted vertical line (named "switch" in the figure's layout) where the new
prompt starts; the RoPE view rings the blocks a switch re-wrote, with what it cost. The
top-k panel's title carries the selection change (how many selected blocks are new).
"""

from __future__ import annotations

import html
import statistics

import plotly.graph_objects as go

from packforcing.events import Block, Switch

SWITCH_COLOR = "#e0407a"


def switches(events) -> list[Switch]:
    return [e for e in events if isinstance(e, Switch)]


def label(switch: Switch, width: int = 28) -> str:
    """The switch as annotation text: the prompt escaped (shown as text, never markup)."""
    prompt = switch.prompt if len(switch.prompt) <= width else switch.prompt[: width - 1] + "…"
    return html.escape(f"→ {prompt}")


LABELLED = 8  # the newest switch lines carry their prompt; more labels would only overlap


def _mark(fig: go.Figure, events, x_of, yref: str) -> go.Figure:
    """One dotted line where each new prompt starts (several switches before the same block
    share it; the last one's prompt is the label). Shapes and labels are set at once:
    plotly's add_vline and add_annotation check every earlier shape again, which made a
    figure's cost grow with the square of its switches."""
    last = {x_of(switch): switch for switch in switches(events)}  # x -> the switch in force there
    shapes = [dict(type="line", x0=x, x1=x, y0=0, y1=1, xref="x", yref=yref, name="switch",
                   line=dict(color=SWITCH_COLOR, dash="dot", width=2))
              for x in last]
    # upright along the line, from the foot of the plot: clear of the subplot's title
    labels = [dict(x=x, y=0.02, xref="x", yref="y domain", text=label(switch), showarrow=False, textangle=-90,
                   xanchor="right", yanchor="bottom", font=dict(size=10, color=SWITCH_COLOR))
              for x, switch in list(last.items())[-LABELLED:]]
    return fig.update_layout(shapes=[*fig.layout.shapes, *shapes], annotations=[*fig.layout.annotations, *labels])


def mark_blocks(fig: go.Figure, events) -> go.Figure:
    """A line at each switch across a figure of generated blocks (between the last old block and the first new one)."""
    return _mark(fig, events, lambda switch: switch.block - 0.5, "paper")


def mark_seconds(fig: go.Figure, events) -> go.Figure:
    """A line at each switch on the first subplot's axis of video seconds."""
    ends = {e.block: e.video_seconds for e in events if isinstance(e, Block)}
    return _mark(fig, events, lambda switch: ends.get(switch.block - 1, 0.0), "y domain")


def mark_recached(fig: go.Figure, events, block: Block) -> str:
    """Ring, on the RoPE view of `block`, the blocks the last switch up to it re-wrote;
    returns a title line with the switch's cost ('' when none)."""
    before = [s for s in switches(events) if s.block <= block.block]
    if not before:
        return ""
    switch = before[-1]
    shown = [m for m in switch.recached if m in block.positions]
    if shown:
        fig.add_trace(go.Scatter(
            x=[block.positions[m] for m in shown], y=[1] * len(shown), mode="markers",
            name=f"re-cached at the switch before block {switch.block}",
            marker=dict(symbol="circle-open", size=19, color=SWITCH_COLOR, line=dict(width=2)),
            hovertext=[f"block {m}: K/V re-written under the new prompt before block {switch.block}" for m in shown],
            hoverinfo="text"))
    done = (f"re-cached {len(switch.recached)} blocks in {switch.seconds:.2f} s" if switch.recached
            else f"no re-cache ({switch.recache})")
    return f"<br>switch before block {switch.block}: {done}"


def stability(events) -> str:
    """The selection change, a line for the top-k panel's title ('' before any block compares)."""
    changes = [e.selection_change for e in events if isinstance(e, Block) and e.selection_change is not None]
    if not changes:
        return ""
    return (f"<br>selection change: {statistics.mean(changes):.0%} of the selected blocks new per block "
            f"(last: {changes[-1]:.0%})")
