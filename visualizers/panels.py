"""Pure functions from trace events to Plotly figures (no gradio, no torch).

Every figure takes the list of events of one run (RunStart, Block..., maybe RunEnd) and
draws only what is in them, so a live run and a replayed trace look the same.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from packforcing.events import Block, RunStart, Switch
from packforcing.events import block_events as _blocks

from . import switches as _switches

PARTITION_COLORS = {
    "sink": "#7c6cf0",
    "mid_selected": "#f0a030",
    "mid_archived": "#c8b890",
    "recent": "#30a0d0",
    "current": "#50c070",
    "evicted": "#d05050",
    "full": "#d05050",
}
PARTITION_LABELS = {
    "sink": "sink (full resolution, never evicted)",
    "mid_selected": "mid bank, selected (compressed)",
    "mid_archived": "mid bank, archived (compressed, not attended)",
    "recent": "recent (full resolution)",
    "current": "current block (being generated)",
}


def _run(events) -> RunStart | None:
    return next((e for e in events if isinstance(e, RunStart)), None)


def style_figure(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    # Transparent backgrounds and mid-luminance grid lines read in light and dark themes.
    fig.update_layout(
        title=dict(text=title, x=0.01, font=dict(size=14)),
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        font=dict(color="#8a8f98"),
        # the legend sits at the foot of the figure (not a fraction of the plot's height
        # below it), so a legend of several rows cannot climb onto the x-axis title
        margin=dict(l=50, r=10, t=40 + 18 * title.count("<br>"),
                    b=80),  # a second title line: a switch, the selection change
        legend=dict(orientation="h", yref="container", yanchor="bottom", y=0, font=dict(size=10)),
        hoverlabel=dict(namelength=-1),
        height=320,
    )
    fig.update_xaxes(title_text=x, gridcolor="rgba(128,128,128,0.25)", zeroline=False)
    fig.update_yaxes(title_text=y, gridcolor="rgba(128,128,128,0.25)", zeroline=False)
    return fig


def empty_figure(message: str = "Press Generate: panels fill in block by block") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=13))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style_figure(fig, "", "", "")


def bounded_context(run: RunStart | None) -> int | None:
    if run is None or run.config.get("policy") == "full":
        return None
    return run.geometry.get("bounded_context_tokens")


ATTENDED = ("sink", "mid_selected", "recent", "current")


def occupancy_figure(events) -> go.Figure:
    """Top: tokens each block attends, stacked by partition, under the bounded context.
    Bottom: compressed tokens held in the mid bank but not attended, apart, so they
    never read as attended tokens above the bound."""
    blocks = _blocks(events)
    if not blocks:
        return empty_figure()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, row_heights=[0.7, 0.3],
                        subplot_titles=["attended by each block", "held in the mid bank, not attended"])
    x = [b.block for b in blocks]
    for part in (*ATTENDED, "mid_archived"):
        label = PARTITION_LABELS[part]
        y = [b.tokens.get(part, 0) for b in blocks]
        hover = [f"block {b.block}: {y[i]:,} tokens in {label}" for i, b in enumerate(blocks)]
        row = 1 if part in ATTENDED else 2
        fig.add_trace(go.Scatter(x=x, y=y, name=label, stackgroup="attended" if row == 1 else "held", mode="lines",
                                 line=dict(width=0.5, color=PARTITION_COLORS[part]), hovertext=hover, hoverinfo="text"),
                      row=row, col=1)
    bound = bounded_context(_run(events))
    if bound:
        fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[bound, bound], name=f"bounded context ({bound:,} tokens)",
                                 mode="lines",
                                 line=dict(dash="dash", color="#e05080"),
                                 hovertext=[f"never more than {bound:,} tokens are attended"] * 2,
                                 hoverinfo="text"), row=1, col=1)
    fig = style_figure(fig, "Cache occupancy: tokens attended per block, and tokens only held", "", "tokens")
    fig.update_xaxes(title_text="generated block", row=2, col=1)
    held = max(b.tokens.get("mid_archived", 0) for b in blocks)
    fig.update_yaxes(title_text="held", range=[0, max(held, 1) * 1.15], row=2, col=1)  # no negative ticks while empty
    fig.update_annotations(font_size=11)
    _switches.mark_blocks(fig, events)
    return fig.update_layout(height=480)  # its legend has six rows


def selection_figure(events) -> go.Figure:
    """Generation block x mid block heatmap of selection scores; selected blocks marked."""
    blocks = _blocks(events)
    mids = sorted({m for b in blocks for m in b.mid_bank})
    if not mids:
        return empty_figure("No mid-bank blocks yet: they appear once a block leaves the recent window")
    rows = [b for b in blocks if b.mid_bank]
    column = {m: i for i, m in enumerate(mids)}
    z = [[math.nan] * len(mids) for _ in rows]
    text = [[""] * len(mids) for _ in rows]
    for r, b in enumerate(rows):
        for m in b.mid_bank:
            score = b.selection_scores.get(m)
            chosen = m in b.mid_selected
            z[r][column[m]] = score if score is not None else math.nan
            shown = f"score {score:.3g}" if score is not None else "not scored (policy needs no score)"
            state = "selected" if chosen else "archived, not attended"
            text[r][column[m]] = f"block {m} for block {b.block}: {shown}, {state}"
    fig = go.Figure(go.Heatmap(x=mids, y=[b.block for b in rows], z=z, text=text, hoverinfo="text",
                               colorscale="Viridis",
                               colorbar=dict(title="score", thickness=10), xgap=1, ygap=1, name="scores"))
    sel_x = [m for b in rows for m in b.mid_selected]
    sel_y = [b.block for b in rows for _ in b.mid_selected]
    fig.add_trace(go.Scatter(x=sel_x, y=sel_y, mode="markers", name="selected (top-k)",
                             marker=dict(symbol="square-open", size=9, color="#f0a030", line=dict(width=2)),
                             hovertext=[f"block {m} selected for block {y}" for m, y in zip(sel_x, sel_y)],
                             hoverinfo="text"))
    fig = style_figure(fig, "Top-k selection: attention demand spans the whole history" + _switches.stability(events),
                 "mid-bank block (time it was generated)", "generated block")
    fig.update_xaxes(type="linear")
    return fig


def rope_figure(events, block: int | None = None) -> go.Figure:
    """Original temporal position of each attended block vs where RoPE packing moves it."""
    blocks = _blocks(events)
    if not blocks:
        return empty_figure()
    b = next((e for e in blocks if e.block == block), blocks[-1])
    run = _run(events)
    repair = run is None or run.config.get("rope_repair", True)
    parts = [("sink", b.sink), ("mid_selected", b.mid_selected), ("recent", b.recent), ("current", [b.current])]
    fig = go.Figure()
    for part, members in parts:
        orig = [b.positions.get(m, math.nan) for m in members]
        packed = [o + b.rope_shift.get(m, 0.0) for o, m in zip(orig, members)]
        hover = [f"block {m}: generated at latent frame {o:g}, attended at frame {p:g} (shift {p - o:+g})" for m, o,
                 p in zip(members, orig, packed)]
        fig.add_trace(go.Scatter(x=orig, y=[1] * len(members), mode="markers", name=f"{part} original",
                                 marker=dict(color=PARTITION_COLORS[part], size=11, symbol="circle-open",
                                             line=dict(width=2)),
                                 hovertext=hover, hoverinfo="text", legendgroup=part, showlegend=False))
        fig.add_trace(go.Scatter(x=packed, y=[0] * len(members), mode="markers", name=PARTITION_LABELS[part],
                                 marker=dict(color=PARTITION_COLORS[part], size=11),
                                 hovertext=hover, hoverinfo="text", legendgroup=part))
        for o, p in zip(orig, packed):
            fig.add_annotation(x=p, y=0.08, ax=o, ay=0.92, xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                               arrowhead=2, arrowwidth=1, arrowcolor=PARTITION_COLORS[part], text="")
    skipped = [m for m in b.mid_bank if m not in b.mid_selected]
    if skipped:
        fig.add_trace(go.Scatter(x=[b.positions.get(m, math.nan) for m in skipped], y=[1] * len(skipped),
                                 mode="markers", name="archived, not attended (gap closed)",
                                 marker=dict(color=PARTITION_COLORS["mid_archived"], size=8, symbol="x"),
                                 hovertext=[f"block {m}: archived, not attended by block {b.block}" for m in skipped],
                                 hoverinfo="text"))
    # short titles: the panel is half a screen wide; the rows' labels say the rest
    title = f"RoPE packing, block {b.block}: the gaps close"
    if not repair:
        title = f"RoPE repair off, block {b.block}: gaps stay open"
    title += _switches.mark_recached(fig, events, b)  # a second line
    fig = style_figure(fig, title, "temporal position (latent frames)", "")
    fig.update_yaxes(tickvals=[0, 1], ticktext=["keys placed", "generated"], range=[-0.4, 1.4], automargin=True)
    fig.update_layout(height=380, margin_b=140)  # room for a legend of three rows
    return fig


def memory_figure(events, projection: list[dict] | None = None) -> go.Figure:
    """Bytes held by the cache vs the full-cache estimate; optionally the real-model projection."""
    blocks = _blocks(events)
    if not blocks:
        return empty_figure()
    rows = 2 if projection else 1
    fig = make_subplots(rows=rows, cols=1, vertical_spacing=0.22,
                        subplot_titles=["this run (KB)"]
                        + (["Wan2.1-1.3B at 832x480, projected (GB)"] if projection else []))
    x = [b.video_seconds for b in blocks]
    held = [b.kv_bytes / 1024 for b in blocks]
    full = [b.full_cache_bytes / 1024 for b in blocks]
    fig.add_trace(go.Scatter(x=x, y=held, name="KV held by this run", line=dict(color="#50c070", width=3),
                             hovertext=[f"after block {b.block} ({b.video_seconds:.1f} s): {b.kv_bytes:,} bytes held"
                                        for b in blocks], hoverinfo="text"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=full, name="a full cache would hold", line=dict(color="#d05050", dash="dash"),
                             hovertext=[f"after block {b.block}: a full cache would hold {b.full_cache_bytes:,} bytes"
                                        for b in blocks], hoverinfo="text"), row=1, col=1)
    if projection:
        px = [r["video_seconds"] for r in projection]
        for key, color, dash in (("full", "#d05050", "dash"), ("dynamic", "#50c070", None),
                                 ("window", "#30a0d0", "dot")):
            ys = [r[key] / 1e9 for r in projection]
            fig.add_trace(go.Scatter(x=px, y=ys, name=f"real model, {key}", line=dict(color=color, dash=dash, width=2),
                                     opacity=0.8,
                                     hovertext=[f"{key} at {s:.0f} s: {v:.2f} GB" for s, v in zip(px, ys)],
                                     hoverinfo="text"), row=2, col=1)
    fig = style_figure(fig, "KV memory: bounded vs a full cache", "video seconds", "KB")
    _switches.mark_seconds(fig, events)
    if projection:
        fig.update_yaxes(title_text="GB", row=2, col=1)
    fig.update_layout(height=320 * rows)
    return fig


def calculator_figure(table: dict) -> go.Figure:
    """KV bytes per policy for a memory_table() result (a log axis with GB ticks when the
    policies differ by more than 20x)."""
    by = table["kv_bytes_by_policy"]
    names = list(by)
    gb = [by[n] / 1e9 for n in names]
    colors = [PARTITION_COLORS["full"] if n == "full" else "#50c070" if n == "dynamic" else "#30a0d0" for n in names]
    # cliponaxis off: a bar's label above the tallest bar is drawn in the margin, not cut
    fig = go.Figure(go.Bar(x=names, y=gb, marker_color=colors, text=[_gb(v) for v in gb], textposition="outside",
                           cliponaxis=False,
                           hovertext=[f"{n}: {by[n]:,} bytes of K/V after {table['seconds']:g} s" for n in names],
                           hoverinfo="text"))
    fig = style_figure(fig,
                       f"KV cache after {table['seconds']:g} s at {table['width']}x{table['height']}, {table['fps']} "
                       "FPS", "policy", "")
    low, high = max(min(gb), 1e-9), max(max(gb), 1e-9)
    if high > 20 * low:
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        ticks = [10.0**d for d in decades]
        fig.update_yaxes(type="log", tickvals=ticks, ticktext=[_gb(t) for t in ticks],
                         range=[min(math.floor(math.log10(low)), math.log10(low) - 0.3), math.log10(high) + 0.35])
    else:
        fig.update_yaxes(range=[0, high * 1.2], ticksuffix=" GB")
    return fig.update_layout(margin_t=60)


def _gb(value: float) -> str:
    """A size in GB as a person writes it: 138 GB, 4.3 GB, 0.01 GB."""
    return f"{value:.3g} GB" if value < 100 else f"{value:,.0f} GB"


def figures_at(events, upto_block: int | None = None, projection: list[dict] | None = None) -> tuple[go.Figure,
                                                                                                     go.Figure,
                                                                                                     go.Figure,
                                                                                                     go.Figure]:
    """The four panels as they looked right after `upto_block` (trace replay)."""
    if upto_block is not None:
        events = [e for e in events if not isinstance(e, (Block, Switch)) or e.block <= upto_block]
    return occupancy_figure(events), selection_figure(events), rope_figure(events), memory_figure(events, projection)
