"""The three-partition KV cache: sink, compressed mid bank, recent (+ the current block).

A plain class with named partitions. Keys are stored rotated at the block's original
temporal position; `context(layer)` returns the keys moved to their packed positions.
Invariants (checked after every change): sinks are never evicted, the mid bank never
exceeds its capacity, and a block never attends more than the bounded context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .config import PackForcingConfig
from .rope import rotate_in_time, temporal_rotation, to_device


@dataclass
class BlockKV:
    index: int
    start_frame: float  # original temporal position (latent frames) of the block's first frame
    tokens: int
    compressed: bool = False
    keys: list[torch.Tensor] = field(default_factory=list)  # per layer, (B, S, H, D), rotated at start_frame
    values: list[torch.Tensor] = field(default_factory=list)
    key_sum: torch.Tensor | None = None  # (B, H, D), pre-RoPE keys of the scoring layer, summed over tokens
    query_sum: torch.Tensor | None = None  # (B, H, D), pre-RoPE queries of the scoring layer (subsampled)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


class CacheInvariantError(AssertionError):
    pass


class KVCache:
    def __init__(self, config: PackForcingConfig, num_layers: int, tokens_per_block: int, compressed_tokens: int):
        self.config = config
        self.num_layers = num_layers
        self.tokens_per_block = tokens_per_block
        self.compressed_tokens = compressed_tokens
        self.sink: dict[int, BlockKV] = {}
        self.mid: dict[int, BlockKV] = {}  # insertion order == temporal order
        self.recent: dict[int, BlockKV] = {}
        self.current: int | None = None
        self.selected: list[int] = []
        self.previous_selected: list[int] = []  # the last block's selection (hysteresis, stability)
        self.scores: dict[int, float] = {}
        self.selection_set = False  # this block's mid blocks are chosen (by policy, scores or override)
        self.shifts: dict[int, float] = {}
        self.evicted: list[int] = []
        self._rotation: tuple[torch.Tensor, torch.Tensor] | None = None
        self._bias: torch.Tensor | None = None

    # --- block lifecycle ----------------------------------------------------------
    def begin_block(self, index: int, start_frame: float) -> None:
        self.current = index
        self.current_start = float(start_frame)
        self.previous_selected = self.selected
        self.selected, self.scores, self.shifts, self.evicted = [], {}, {}, []
        self.selection_set = False
        self._rotation, self._bias = None, None

    def set_selection(self, selected: list[int], scores: dict[int, float] | None = None) -> None:
        unknown = [m for m in selected if m not in self.mid]
        if unknown:
            raise CacheInvariantError(f"selected blocks {unknown} are not in the mid bank {list(self.mid)}")
        self.selected = sorted(selected)
        self.scores = dict(scores or {})
        self.selection_set = True
        self.shifts = self._packing_shifts()
        self._rotation, self._bias = None, None
        self.check()

    @property
    def selection_pending(self) -> bool:
        return self.config.policy == "dynamic" and len(self.mid) > 0 and not self.selection_set

    def add_block(self, block: BlockKV) -> None:
        """The just-written current block joins the sink (while it has room) or the recent window."""
        self.current = None
        if len(self.sink) < self.config.sink_blocks:
            self.sink[block.index] = block
        else:
            self.recent[block.index] = block
        self.check()

    def pop_overflow(self) -> BlockKV | None:
        """The block leaving the recent window, if any (the caller compresses or drops it)."""
        if len(self.recent) > self.config.recent_blocks:
            oldest = next(iter(self.recent))
            return self.recent.pop(oldest)
        return None

    def archive(self, block: BlockKV) -> None:
        """Put a block into the mid bank, evicting the oldest while over capacity."""
        capacity = self.config.bank_capacity
        if self.config.policy != "full":
            if capacity == 0:
                return
            while len(self.mid) >= capacity:
                oldest = next(iter(self.mid))
                del self.mid[oldest]
                self.evicted.append(oldest)
        self.mid[block.index] = block
        self.check()

    def clear(self) -> None:
        self.sink.clear(), self.mid.clear(), self.recent.clear()
        self.selected, self.previous_selected = [], []
        self._rotation, self._bias = None, None
        self.current = None

    # --- what the current block attends ----------------------------------------------
    def attended(self) -> list[BlockKV]:
        """Attended cached blocks in temporal order: sink, selected mid, recent."""
        return list(self.sink.values()) + [self.mid[m] for m in self.selected] + list(self.recent.values())

    def _packing_shifts(self) -> dict[int, float]:
        """Recent and current keep their positions; selected mid blocks are packed
        contiguously just before them, sinks just before those (paper fig. 2c)."""
        blocks = self.attended()
        if not self.config.rope_repair:
            return {b.index: 0.0 for b in blocks}
        shifts = {}
        anchor = self.current_start
        span = float(self.config.block_frames)
        for b in reversed(list(self.recent.values())):
            shifts[b.index] = 0.0
            anchor = b.start_frame
        packed = list(self.sink.values()) + [self.mid[m] for m in self.selected]
        for b in reversed(packed):
            anchor -= span
            shifts[b.index] = anchor - b.start_frame
        return {b.index: shifts[b.index] for b in blocks}

    def context(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Keys (moved to packed positions) and values of everything the current block
        attends besides itself. Built afresh at every pass, one layer at a time: keeping
        every layer's copy for the block's steps would hold the attended K/V twice (for
        1.3B at 832x480, about 4 GB more with `dynamic`, and `full` would run out of memory at
        half the length). The rotation tables, shared by every layer, are made once per
        block."""
        blocks = self.attended()
        if not blocks:
            return None, None
        if not self.shifts:
            raise CacheInvariantError(f"block {self.current} attends before its selection was set (call set_selection)")
        keys = torch.cat([b.keys[layer] for b in blocks], dim=1)
        values = torch.cat([b.values[layer] for b in blocks], dim=1)
        if any(self.shifts[b.index] for b in blocks):
            if self._rotation is None:
                deltas = torch.cat([torch.full((b.tokens,), self.shifts[b.index]) for b in blocks])
                # on the keys' device once, queued without a host sync: copied from the
                # host at every layer of every pass, they are the likely cause of window's
                # FPS without decode falling from 26.8 to 22.4 on an H100 (README)
                self._rotation = tuple(to_device(t, keys.device) for t in temporal_rotation(deltas, keys.shape[-1]))
            keys = rotate_in_time(keys, *self._rotation)
        return keys, values

    def context_bias(self) -> torch.Tensor | None:
        """Attention-logit bias per context token (config.proportional_attention): log of
        the number of full-resolution tokens a compressed token stands for, 0 for the
        others; None when off or when nothing compressed is attended."""
        if not self.config.proportional_attention:
            return None
        if self._bias is None:
            blocks = self.attended()
            if not any(b.compressed for b in blocks):
                return None
            weight = math.log(self.tokens_per_block / self.compressed_tokens)
            self._bias = torch.cat([torch.full((b.tokens,), weight if b.compressed else 0.0) for b in blocks])
        return self._bias

    # --- accounting ------------------------------------------------------------------
    def context_tokens(self) -> int:
        return sum(b.tokens for b in self.attended()) + self.tokens_per_block

    def bounded_context_tokens(self) -> int:
        c = self.config
        return (c.sink_blocks + c.recent_blocks + 1) * self.tokens_per_block + c.top_k * self.compressed_tokens

    def kv_bytes(self) -> int:
        return sum(b.nbytes() for part in (self.sink, self.mid, self.recent) for b in part.values())

    def partition_tokens(self) -> dict[str, int]:
        selected = set(self.selected)
        return {
            "sink": sum(b.tokens for b in self.sink.values()),
            "mid_selected": sum(self.mid[m].tokens for m in self.selected),
            "mid_archived": sum(b.tokens for m, b in self.mid.items() if m not in selected),
            "recent": sum(b.tokens for b in self.recent.values()),
            "current": self.tokens_per_block,
        }

    def check(self) -> None:
        c = self.config
        if len(self.sink) > c.sink_blocks:
            raise CacheInvariantError(f"sink holds {len(self.sink)} blocks, more than sink_frames allows "
                                      f"({c.sink_blocks})")
        if c.policy != "full" and len(self.mid) > c.bank_capacity:
            raise CacheInvariantError(f"mid bank holds {len(self.mid)} blocks, capacity is {c.bank_capacity}")
        if len(self.recent) > c.recent_blocks + 1:
            raise CacheInvariantError(f"recent window holds {len(self.recent)} blocks, allowed {c.recent_blocks}")
        if c.policy != "full" and len(self.selected) > c.top_k:
            raise CacheInvariantError(f"{len(self.selected)} mid blocks selected, top_k is {c.top_k}")
        if c.policy != "full" and self.current is not None and self.context_tokens() > self.bounded_context_tokens():
            raise CacheInvariantError(
                f"block {self.current} would attend {self.context_tokens()} tokens, "
                f"more than the bounded context {self.bounded_context_tokens()}"
            )
