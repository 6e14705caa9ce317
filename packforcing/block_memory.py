"""A block's memory from write to eviction: the KV cache and what moving a block on needs.

The sampler runs the block loop (begin, denoise, write, yield events); everything the
cache does with a written block happens here:
  admit    the written block joins the sink or the recent window, with its clean latent,
           its selection and its pixels (sinks keep no pixels: they are never compressed);
  retire   the block leaving the recent window goes to the mid bank, compressed from its
           latent (HR) and its pixels' LR input (or whole for `full`, or away for `window`);
           the oldest mid block is evicted when the bank is full;
  recache  a prompt switch re-writes the cached blocks config.recache names;
  snapshot the cache as the current block saw it, for the trace's block event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .attention import CacheSession, SelectionHook
from .backbone import Backbone
from .cache import BlockKV, KVCache
from .compression import fit_lr_to_grid, lr_latent, token_span
from .config import PackForcingConfig
from .decoding import Decoded
from .passes import ModelPasses
from .rope import apply_rotary, grid_positions, rope_cos_sin
from .selection import select_blocks, selection_change
from .switching import recache_targets


@dataclass
class KeptBlock:
    """What moving a cached block on and re-writing it need: its clean latent, the
    selection it attended, its pixels until it leaves the recent window (a decode that
    may still be under way) and from then on the LR branch's input."""

    latent: torch.Tensor
    selected: list[int]
    pixels: Decoded | None = None
    lr: torch.Tensor | None = None


@dataclass(frozen=True)
class CacheSnapshot:
    """The cache as the current block saw it (the cache fields of the trace's block event)."""

    block: int
    sink: list[int]
    mid_bank: list[int]
    mid_selected: list[int]
    recent: list[int]
    current: int
    selection_scores: dict[int, float]
    rope_shift: dict[int, float]
    context_tokens: int
    positions: dict[int, float]
    tokens: dict[str, int]
    selection_change: float | None


class BlockMemory:
    def __init__(self, backbone: Backbone, config: PackForcingConfig, seed: int = 0):
        """seed: the random policy's selection generator (dynamic scores instead)."""
        self.backbone, self.config = backbone, config
        self.tokens_per_block = config.block_frames * backbone.tokens_per_latent_frame()
        self.grid = backbone.compressed_grid(config.block_frames)
        self.token_span = token_span(backbone.patch)  # where compressed tokens sit in RoPE
        self.compressed_tokens = math.prod(self.grid)
        if self.compressed_tokens == 0 and config.compresses_mid:
            raise ValueError(
                f"a {backbone.width}x{backbone.height} frame is too small to compress a block "
                f"(grid {self.grid}); use policy window or full"
            )
        if config.compression != "lr" and backbone.hr_compressor is None:
            raise ValueError(
                f"compression={config.compression!r} needs an HR compressor; this model has none, use 'lr'")
        layers = backbone.transformer.config.num_layers
        self.cache = KVCache(config, layers, self.tokens_per_block, self.compressed_tokens)
        self.session = CacheSession(self.cache)
        self.passes = ModelPasses(backbone, self.session)
        self.selection_rng = torch.Generator().manual_seed(seed)
        self.kept: dict[int, KeptBlock] = {}  # every cached block's (bounded by the cache)

    # --- the current block ----------------------------------------------------------
    def begin(self, index: int, selection: list[int] | None = None, hook: SelectionHook | None = None) -> None:
        """The cache turns to block `index` and its mid blocks are chosen: by the policy
        now, or (dynamic) scored inside the block's first forward. `selection` attends
        exactly these mid blocks instead (a probe's override, a re-cache); `hook` is
        training's view into dynamic selection (required blocks, the scoring query)."""
        cache, cfg = self.cache, self.config
        cache.begin_block(index, float(index * cfg.block_frames))
        self.session.set_hook(hook)
        if selection is not None:
            cache.set_selection(selection, {m: 0.0 for m in cache.mid})
        elif not cache.selection_pending:
            cache.set_selection(select_blocks(list(cache.mid), cfg, generator=self.selection_rng))

    def write(self, index: int, x0: torch.Tensor, text: torch.Tensor) -> BlockKV:
        """The clean pass (t=0) of block `index`: its K/V, not yet in the cache (admit)."""
        start = float(index * self.config.block_frames)
        block = BlockKV(index=index, start_frame=start, tokens=self.tokens_per_block)
        self.passes.run(x0, 0.0, text, "write", start, block)
        return block

    def snapshot(self) -> CacheSnapshot:
        """The cache as the current block sees it (taken before the block joins it)."""
        cache = self.cache
        attended = cache.attended()
        held = list(cache.sink.values()) + list(cache.mid.values()) + list(cache.recent.values())
        return CacheSnapshot(
            block=cache.current,
            sink=list(cache.sink),
            mid_bank=list(cache.mid),
            mid_selected=list(cache.selected),
            recent=list(cache.recent),
            current=cache.current,
            selection_scores=dict(cache.scores),
            rope_shift={b.index: cache.shifts[b.index] for b in attended} | {cache.current: 0.0},
            context_tokens=cache.context_tokens(),
            positions={b.index: b.start_frame for b in held} | {cache.current: cache.current_start},
            tokens=cache.partition_tokens(),
            selection_change=selection_change(cache.previous_selected, cache.selected),
        )

    # --- the cache moves on -----------------------------------------------------------
    def admit(self, block: BlockKV, latent: torch.Tensor, pixels: Decoded | None, text: torch.Tensor) -> None:
        """The written block joins the cache; the block leaving the recent window goes
        to the mid bank. Sampling, training and the probes all move the cache this way."""
        cache = self.cache
        cache.add_block(block)
        sink = block.index in cache.sink  # sinks are never compressed
        self.kept[block.index] = KeptBlock(latent, list(cache.selected), None if sink else pixels)
        self.retire(text)
        held = set(cache.sink) | set(cache.mid) | set(cache.recent)
        for gone in [k for k in self.kept if k not in held]:
            del self.kept[gone]

    def retire(self, text: torch.Tensor) -> None:
        """The block leaving the recent window, if any, goes to the mid bank (or away)."""
        cache, cfg = self.cache, self.config
        leaving = cache.pop_overflow()
        if leaving is None:
            return
        kept = self.kept[leaving.index]
        if kept.pixels is not None:  # its LR input replaces its pixels, which nothing needs after
            if cfg.compresses_mid:  # window drops the block and full keeps it whole: neither needs an LR input
                kept.lr = self.lr_input(kept.pixels.pixels())  # decoded ahead: ready by now
            kept.pixels = None
        if cfg.policy == "full":
            cache.archive(leaving)
        elif cfg.compresses_mid:
            cache.archive(self.compress(leaving, kept.latent, kept.lr, text))

    def recache(self, text: torch.Tensor, mode: str) -> list[int]:
        """Re-write the cached blocks `mode` (config.recache) names under `text`; their
        indices. The cache is rebuilt in temporal order: a re-written block gets a clean
        pass attending what it attended when generated (the sink and recent blocks before
        it, the mid blocks it selected that are still cached), then moves on as it did (a
        mid block re-runs its compressed pass); the others keep their K/V. With `all` and
        nothing evicted yet, the cache ends as if `text` had written it from the start."""
        cache = self.cache
        targets = recache_targets(cache, mode)
        if not targets:
            return []
        in_mid = set(cache.mid)
        old = {**cache.sink, **cache.mid, **cache.recent}  # sink, mid, recent: temporal order
        cache.clear()
        for index in old:
            block, kept = old[index], self.kept[index]
            if index not in targets:
                cache.archive(block) if index in in_mid else cache.add_block(block)
                continue
            self.begin(index, selection=[m for m in kept.selected if m in cache.mid])
            cache.add_block(self.write(index, kept.latent, text))
            self.retire(text)
        return targets

    def reset(self) -> None:
        """Empty the cache and drop the kept blocks (the end of a run or a training clip)."""
        self.cache.clear()
        self.kept.clear()
        self.session.set_hook(None)

    # --- compression ------------------------------------------------------------------
    def lr_input(self, pixels: torch.Tensor) -> torch.Tensor | None:
        """The LR branch's input for a block's pixels (None when the config has no LR branch)."""
        if self.config.compression not in ("lr", "hr+lr"):
            return None
        b = self.backbone
        return fit_lr_to_grid(lr_latent(pixels, b.codec).to(b.dtype), self.grid, b.patch)

    def compress(self, block: BlockKV, latent: torch.Tensor, lr: torch.Tensor | None, text: torch.Tensor) -> BlockKV:
        """Full-resolution block -> compressed tokens -> per-layer K/V, from its clean
        latent (HR branch) and its LR input (lr_input(pixels))."""
        cfg, b = self.config, self.backbone
        if lr is None:
            shape = (1, b.transformer.config.in_channels, *(n * k for n, k in zip(self.grid, b.patch)))
            lr = torch.zeros(shape, device=b.device, dtype=b.dtype)
        hr = b.hr_compressor(latent.to(b.dtype)) if cfg.compression in ("hr", "hr+lr") else None
        out = BlockKV(index=block.index, start_frame=block.start_frame, tokens=self.compressed_tokens, compressed=True)

        def add_hr(module, inputs, output):
            if hr is None:
                return output
            return hr if cfg.compression == "hr" else output + hr

        center = tuple((s - 1) / 2 for s in self.token_span)
        patch_embedding = b.transformer.patch_embedding
        if cfg.kv_source == "context-pass":
            handle = patch_embedding.register_forward_hook(add_hr)
            try:
                self.passes.run(lr, 0.0, text, "compressed", block.start_frame, out, self.token_span, center)
            finally:
                handle.remove()
            return out
        # projection: each layer's own K/V projections straight from the compressed tokens.
        tokens = add_hr(None, None, patch_embedding(lr)).flatten(2).transpose(1, 2)
        self._project(out, tokens, center)
        return out

    def _project(self, out: BlockKV, tokens: torch.Tensor, center: tuple) -> None:
        """Each layer's K/V straight from the compressed tokens (kv_source=projection)."""
        model = self.backbone.transformer
        head_dim = model.config.attention_head_dim
        cos, sin = rope_cos_sin(*grid_positions(*self.grid, out.start_frame, self.token_span, center), head_dim)
        for layer, blk in enumerate(model.blocks):
            attn = blk.attn1
            k_raw = attn.norm_k(attn.to_k(tokens)).unflatten(2, (attn.heads, -1))
            v = attn.to_v(tokens).unflatten(2, (attn.heads, -1))
            out.keys.append(apply_rotary(k_raw, cos.to(tokens.device), sin.to(tokens.device)))
            out.values.append(v)
            if layer == 0:
                out.key_sum = k_raw.sum(1)
