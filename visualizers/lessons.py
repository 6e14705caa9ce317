"""What a lesson measured: one mechanism's difference between the two runs of a pair, in a
sentence of numbers taken from the runs' own events (a pure function; no gradio)."""

from __future__ import annotations

import statistics

from packforcing.events import Block, Switch


def _blocks(events) -> list[Block]:
    return [e for e in events if isinstance(e, Block)]


def _mean(values) -> float:
    values = list(values)
    return statistics.mean(values) if values else 0.0


def sink_tokens(events) -> float:
    """Sink tokens each block attended, on average."""
    return _mean(b.tokens.get("sink", 0) for b in _blocks(events))


def reach(events) -> float:
    """How many blocks back the attended mid blocks lie, on average over every attended one."""
    return _mean(b.block - m for b in _blocks(events) for m in b.mid_selected)


def key_shift(events) -> float:
    """The largest RoPE key shift of each block, on average (latent frames)."""
    return _mean(max((abs(s) for s in b.rope_shift.values()), default=0.0) for b in _blocks(events))


def recached(events) -> tuple[int, float]:
    """Blocks re-written at the run's switches, and the seconds that cost."""
    switches = [e for e in events if isinstance(e, Switch)]
    return sum(len(s.recached) for s in switches), sum(s.seconds for s in switches)


def difference(measure: str, events_a, events_b, names: tuple[str, str]) -> str:
    """The measured difference of a finished pair ('' when a side made no block)."""
    a, b = _blocks(events_a), _blocks(events_b)
    if not a or not b:
        return ""
    left, right = names
    if measure == "sink":
        text = (f"{left} attended {sink_tokens(events_a):,.0f} sink tokens per block, "
                f"{right} {sink_tokens(events_b):,.0f}")
    elif measure == "reach":
        text = (f"the mid blocks {left} attended lay {reach(events_a):.1f} blocks back on average, "
                f"{right}'s {reach(events_b):.1f}")
    elif measure == "rope":
        text = (f"{left} moved keys by up to {key_shift(events_a):.1f} latent frames per block on average, "
                f"{right} by {key_shift(events_b):.1f}")
    elif measure == "recache":
        (na, sa), (nb, sb) = recached(events_a), recached(events_b)
        text = f"{left} re-cached {na} blocks in {sa:.2f} s at the switch, {right} {nb} blocks in {sb:.2f} s"
    else:
        raise ValueError(f"measure {measure!r} is not known; choose one of sink, reach, rope, recache")
    return (f"Measured: {text}; the cache ended at {a[-1].kv_bytes / 1024:,.0f} KB ({left}) "
            f"and {b[-1].kv_bytes / 1024:,.0f} KB ({right}).")
