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


def _line(fig: go.Figure, x: float, switch: Switch, **where) -> None:
    fig.add_vline(x=x, line=dict(color=SWITCH_COLOR, dash="dot", width=2), name="switch", **where)
    fig.add_annotation(x=x, y=1, yref="y domain", text=label(switch), showarrow=False, xanchor="left", yanchor="top",
                       font=dict(size=10, color=SWITCH_COLOR))


def mark_blocks(fig: go.Figure, events) -> go.Figure:
    """A line at each switch on an axis of generated blocks (between the last old block and the first new one)."""
    for switch in switches(events):
        _line(fig, switch.block - 0.5, switch)
    return fig


def mark_seconds(fig: go.Figure, events) -> go.Figure:
    """A line at each switch on the first subplot's axis of video seconds."""
    ends = {e.block: e.video_seconds for e in events if isinstance(e, Block)}
    for switch in switches(events):
        _line(fig, ends.get(switch.block - 1, 0.0), switch, row=1, col=1)
    return fig


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
    mean = statistics.mean(changes)
    return f"<br>selection change: {mean:.0%} of the selected blocks new per block (last: {changes[-1]:.0%})"
