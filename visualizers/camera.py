"""The camera panel: where the camera looks now against where each cached block was
filmed, coloured by the partition that holds it and whether the selection attended it.

A revisit reads at a glance: the current view (a horizontal band) crosses the bar of the
mid-bank block that filmed the same place, and that bar is orange when the selection
attended it. Pure function of trace events (block events' optional `camera` field).
"""

from __future__ import annotations

import plotly.graph_objects as go

from packforcing.events import block_events

from .panels import PARTITION_COLORS, empty_figure, style_figure

DROPPED = "#9aa0a6"  # filmed, but no longer in the cache (window policy, or evicted)


def _spans(camera: dict) -> list[tuple[float, float]]:
    """The panorama interval(s) a block's views covered, split where they wrap."""
    lo = min(camera["x"], camera["end"])
    hi = max(camera["x"], camera["end"]) + camera["view"]
    if abs(camera["end"] - camera["x"]) > camera["period"] / 2:  # the path wrapped inside the block
        lo, hi = max(camera["x"], camera["end"]), min(camera["x"], camera["end"]) + camera["period"] + camera["view"]
    period = camera["period"]
    if period is None or hi <= period:
        return [(lo, hi)]
    return [(lo, period), (0.0, hi - period)] if lo < period else [(lo - period, hi - period)]


def _role(b, event) -> tuple[str, str]:
    if b == event.block:
        return "current", PARTITION_COLORS["current"]
    if b in event.sink:
        return "sink", PARTITION_COLORS["sink"]
    if b in event.recent:
        return "recent", PARTITION_COLORS["recent"]
    if b in event.mid_selected:
        return "mid bank, attended", PARTITION_COLORS["mid_selected"]
    if b in event.mid_bank:
        return "mid bank, not attended", PARTITION_COLORS["mid_archived"]
    return "no longer cached", DROPPED


def camera_figure(events, block: int | None = None) -> go.Figure:
    """Bars: each block's filmed panorama span at its time; band: the shown block's view."""
    blocks = [b for b in block_events(events) if b.camera is not None]
    if not blocks:
        return empty_figure("This model has no camera input (none is shipped yet)")
    shown = next((b for b in blocks if b.block == block), blocks[-1])
    fig = go.Figure()
    legend = set()
    for b in blocks:
        if b.block > shown.block:
            break
        role, colour = _role(b.block, shown)
        score = shown.selection_scores.get(b.block)
        hover = f"block {b.block} ({role}), camera {b.camera['direction']}" + (
            f", score {score:.3g}" if score is not None else ""
        )
        for lo, hi in _spans(b.camera):
            fig.add_trace(
                go.Bar(
                    x=[b.block],
                    y=[hi - lo],
                    base=[lo],
                    marker_color=colour,
                    width=0.8,
                    name=role,
                    legendgroup=role,
                    showlegend=role not in legend,
                    hovertext=hover,
                    hoverinfo="text",
                )
            )
            legend.add(role)
    for lo, hi in _spans(shown.camera):
        fig.add_hrect(y0=lo, y1=hi, fillcolor=PARTITION_COLORS["current"], opacity=0.15, line_width=0)
    period = shown.camera.get("period")
    fig = style_figure(
        fig,
        f"Camera: block {shown.block} looks where the highlighted band is; bars show where each block was filmed",
        "block (time)",
        "panorama position",
    )
    fig.update_layout(barmode="overlay", bargap=0.1)
    if period:
        fig.update_yaxes(range=[0, period])
    return fig
