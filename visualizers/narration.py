"""What the cache did at a block, in two or three plain sentences (a pure function of trace
events; no gradio). Plain text: the app shows it as text, never as markup.

Blocks are numbered from 0, as in the trace, the panels and the status line.
"""

from __future__ import annotations

from packforcing.events import Block, RunStart, Switch

# how each policy picks the mid blocks a block attends
PICKED_BY = {
    "dynamic": "the ones its queries scored highest",
    "fifo": "the newest ones, whatever the queries want",
    "random": "picked at random",
    "full": "every one (a full cache)",
}


def listed(ids) -> str:
    """[2, 3, 7] -> '2, 3 and 7'."""
    words = [str(i) for i in ids]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _blocks(ids) -> str:
    return f"block{'s' if len(ids) > 1 else ''} {listed(ids)}"


def _quote(text: str, width: int = 60) -> str:
    return f'"{text if len(text) <= width else text[: width - 1] + "…"}"'


def _happened(b: Block, config: dict, switch: Switch | None) -> str:
    """One sentence on the switch before this block and the eviction after it ('' when neither happened)."""
    parts = []
    if switch is not None:
        done = (f"re-cached {_blocks(switch.recached)} under it in {switch.seconds:.2f} s" if switch.recached
                else "kept the cache as it was (no re-cache: the old prompt's keys stay)")
        parts.append(f"the prompt switched to {_quote(switch.prompt)} before block {b.block} and {done}")
    if b.evicted:
        oldest = max(b.evicted) <= min(b.mid_bank, default=max(b.evicted))
        parts.append(f"after block {b.block}, mid {_blocks(b.evicted)}{', the oldest,' if oldest else ''} "
                     f"left the cache to make room (the mid bank holds at most {config.get('mid_capacity')})")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "." if text else ""


def _selected(b: Block, config: dict, filmed: dict[int, dict] | None) -> str:
    """Which mid blocks it attended, and whether the one that filmed this place is among them."""
    if not b.mid_bank:
        if config.get("policy") == "window":
            return f"Block {b.block} keeps no mid bank (window policy): what left the recent window is gone."
        return (f"Block {b.block} holds no mid block yet: blocks enter the compressed mid bank once they leave "
                "the recent window.")
    if b.mid_selected and len(b.mid_selected) == len(b.mid_bank):
        text = (f"Block {b.block} attended {'both' if len(b.mid_bank) == 2 else 'all'} mid "
                f"{_blocks(b.mid_bank)} it holds")
    elif b.mid_selected:
        how = PICKED_BY.get(config.get("policy"), "by its policy")
        text = f"Block {b.block} attended mid {_blocks(b.mid_selected)} of the {len(b.mid_bank)} it holds, {how}"
    else:
        text = f"Block {b.block} attended none of the {len(b.mid_bank)} mid blocks it holds"
    source = _filmed_here(b, filmed or {})
    if source is not None:
        text += (f", among them block {source}, which filmed this place" if source in b.mid_selected
                 else f"; block {source}, which filmed this place, is not among them")
    return text + "."


def _filmed_here(b: Block, filmed: dict[int, dict]) -> int | None:
    """The newest mid-bank block whose camera looked where this block looks, if any."""
    if b.camera is None:
        return None
    here = b.camera["x"] % b.camera["period"] if b.camera.get("period") else b.camera["x"]
    for m in sorted(b.mid_bank, reverse=True):
        cam = filmed.get(m)
        if cam is not None and abs(cam["x"] - here) < cam.get("view", 0) / 2:
            return m
    return None


def _numbers(b: Block, run: RunStart | None) -> str:
    """How far RoPE repair moved keys, tokens against the bound, memory against a full cache."""
    config, geometry = (run.config, run.geometry) if run is not None else ({}, {})
    moved = max((abs(s) for s in b.rope_shift.values()), default=0.0)
    if not config.get("rope_repair", True):
        rope = "RoPE repair is off, so attended keys keep the gaps left by blocks not attended"
    elif moved:
        rope = f"RoPE repair moved keys by up to {moved:g} latent frames to close the gaps"
    else:
        rope = "no key needed moving (no gap to close)"
    bound = geometry.get("bounded_context_tokens") if config.get("policy") != "full" else None
    tokens = f"{b.context_tokens:,} tokens were attended, " + (
        f"within the bound of {bound:,} that holds however long the video runs" if bound
        else "all of the history (a full cache has no bound)")
    share = (f"{b.kv_bytes / b.full_cache_bytes:.0%} of the {b.full_cache_bytes / 1024:,.0f} KB "
             "a full cache would hold by now" if b.full_cache_bytes else "")
    return f"{rope}; {tokens}; the cache holds {b.kv_bytes / 1024:,.0f} KB{', ' + share if share else ''}."


def narrate(b: Block, run: RunStart | None, switch: Switch | None = None, filmed: dict[int, dict] | None = None) -> str:
    """Two or three sentences on block `b`. `switch`: the switch that applies from this
    block, if any; `filmed`: earlier blocks' camera entries (models with a camera)."""
    config = run.config if run is not None else {}
    numbers = _numbers(b, run)
    return " ".join(s for s in (_happened(b, config, switch), _selected(b, config, filmed),
                                numbers[0].upper() + numbers[1:]) if s)


def narration_at(events, block: int | None = None) -> str:
    """The narration of `block` (default: the newest) of a run's events; '' before any block."""
    blocks = [e for e in events if isinstance(e, Block) and (block is None or e.block <= block)]
    if not blocks:
        return ""
    b = blocks[-1]
    run = next((e for e in events if isinstance(e, RunStart)), None)
    switch = next((e for e in reversed(events) if isinstance(e, Switch) and e.block == b.block), None)
    return narrate(b, run, switch, {e.block: e.camera for e in blocks if e.camera is not None})
