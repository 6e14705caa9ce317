"""Plugging the cache into diffusers' Wan: one attention processor per self-attention layer.

diffusers 0.42 never forwards `attention_kwargs` to processors, so each processor holds
the shared `CacheSession` and its layer index. Cross-attention keeps Wan's own processor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cache import BlockKV, KVCache
from .rope import PositionedRotaryEmbed, apply_rotary
from .selection import factorised_scores, include_required, select_blocks

MODES = ("denoise", "write", "compressed", "plain")


class SelectionHook:
    """What training adds to one block's dynamic selection: mid blocks it must include
    (the trainer knows where its world revisits), and the scoring query it receives,
    with its graph, for a selection loss. With `sources`, each layer's denoising attention
    also reports the log of its softmax mass on those blocks' tokens, with its graph, for a
    reading loss. Sampling uses none."""

    def __init__(self, required: list[int] | tuple[int, ...] = (), sources: list[int] | tuple[int, ...] = ()):
        self.required = list(required)
        self.sources = list(sources)
        self.query_sum: torch.Tensor | None = None  # (B, H, D), set when the block is scored
        self.log_mass: list[torch.Tensor] = []  # per layer (B, H, S_q): log attention mass on the sources


class CacheSession:
    """What the processors of one model share: the cache and the mode of the pass.

    denoise:    the current block attends the packed context plus itself.
    write:      the same, and its K/V are kept as `pending` (the clean t=0 pass).
    compressed: compressed tokens attend only themselves; their K/V are kept as `pending`.
    plain:      no cache at all (Wan's own behaviour, used by references and tests).
    """

    def __init__(self, cache: KVCache, generator: torch.Generator | None = None):
        self.cache = cache
        self.mode = "plain"
        self.pending: BlockKV | None = None
        self.generator = generator
        self.query_stride = cache.config.query_stride
        self.hook: SelectionHook | None = None

    def set_hook(self, hook: SelectionHook | None) -> None:
        """The hook the current block's dynamic selection reports to (None: sampling)."""
        self.hook = hook

    def set_mode(self, mode: str, pending: BlockKV | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; allowed: {MODES}")
        self.mode, self.pending = mode, pending

    def attend(self, layer: int, q, k, v, q_raw, k_raw) -> torch.Tensor:
        """q, k, v: (B, S, H, D) with RoPE applied; q_raw, k_raw: before RoPE."""
        if self.mode == "plain":
            return sdpa(q, k, v)
        if self.mode == "compressed":
            self._keep(layer, k, v, k_raw, None)
            return sdpa(q, k, v)
        cache = self.cache
        if layer == 0 and cache.selection_pending:
            self._select(q_raw)
        ctx_k, ctx_v = cache.context(layer)
        if ctx_k is not None and ctx_k.shape[0] != k.shape[0]:  # guided halves attend the one cache
            repeats = k.shape[0] // ctx_k.shape[0]
            ctx_k, ctx_v = ctx_k.repeat(repeats, 1, 1, 1), ctx_v.repeat(repeats, 1, 1, 1)
        keys = k if ctx_k is None else torch.cat([ctx_k.to(k.dtype), k], dim=1)
        values = v if ctx_v is None else torch.cat([ctx_v.to(v.dtype), v], dim=1)
        if self.mode == "write":
            self._keep(layer, k, v, k_raw, q_raw)
        bias = cache.context_bias()
        if bias is not None:  # the current block's own tokens get none
            bias = torch.cat([bias.to(q.device, q.dtype), q.new_zeros(k.shape[1])])[None, None, None, :]
        if self.mode == "denoise" and self.hook is not None and self.hook.sources and ctx_k is not None:
            self._report_mass(q, keys, bias, k.shape[1])
        return sdpa(q, keys, values, bias)

    def _report_mass(self, q, keys, bias, own: int) -> None:
        """log of the softmax mass each query puts on the hook's source blocks (nothing
        when none of them is attended)."""
        on = torch.cat([torch.full((b.tokens,), b.index in self.hook.sources) for b in self.cache.attended()]
                       + [torch.zeros(own, dtype=torch.bool)]).to(q.device)
        if not on.any():
            return
        logits = torch.einsum("bqhd,bkhd->bhqk", q.float(), keys.float()) / q.shape[-1] ** 0.5
        if bias is not None:
            logits = logits + bias.float()
        self.hook.log_mass.append(logits[..., on].logsumexp(-1) - logits.logsumexp(-1))

    def _select(self, q_raw: torch.Tensor) -> None:
        """Dynamic top-k at the first denoising step: queries of the current block (this
        step) plus the recent blocks (stored at their write pass), keys of the mid bank."""
        cache = self.cache
        query_sum = q_raw[:, :: self.query_stride].sum(1)
        written = next(iter(cache.mid.values())).key_sum.shape[0]
        if query_sum.shape[0] != written:
            # guidance runs the prompt and the zeroed prompt as one batch over a cache
            # written once; in layer 0's self-attention (before any prompt is read) the
            # two halves are the same, so the first scores for both
            query_sum = query_sum[:written]
        for b in cache.recent.values():
            query_sum = query_sum + b.query_sum.to(query_sum)
        key_sums = {m: b.key_sum for m, b in cache.mid.items()}
        scores = factorised_scores(query_sum, key_sums, q_raw.shape[-1], cache.config.score_head_fraction)
        selected = select_blocks(list(cache.mid), cache.config, scores, previous=cache.previous_selected)
        if self.hook is not None:
            required = [m for m in self.hook.required if m in cache.mid]
            if required:
                selected = include_required(selected, required, scores, cache.config.top_k)
            self.hook.query_sum = query_sum
        cache.set_selection(selected, scores)

    def _keep(self, layer, k, v, k_raw, q_raw) -> None:
        block = self.pending
        if len(block.keys) != layer:
            raise RuntimeError(f"layer {layer} wrote out of order (block has {len(block.keys)} layers)")
        block.keys.append(k)
        block.values.append(v)
        if layer == 0:
            block.key_sum = k_raw.sum(1)
            if q_raw is not None:
                block.query_sum = q_raw[:, :: self.query_stride].sum(1)


def sdpa(q, k, v, bias: torch.Tensor | None = None) -> torch.Tensor:
    """bias: None or an additive logit bias broadcast to (B, H, S_q, S_k)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias)
    return out.transpose(1, 2)


class SessionSlot:
    """Which session a model's processors serve. One slot per model, so several samplers
    can share one set of weights and take turns (each claims the slot per forward)."""

    session: CacheSession | None = None
    copy_kept = False  # set by a CUDA-graph compile, whose outputs are overwritten at the next replay


class PackForcingAttnProcessor:
    """Wan self-attention (same projections, norms and RoPE) with the cache in the middle."""

    def __init__(self, slot: SessionSlot, layer: int):
        self.slot = slot
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        q_raw, k_raw = query, key
        if rotary_emb is not None:
            query, key = apply_rotary(query, *rotary_emb), apply_rotary(key, *rotary_emb)
        out = _cache_attend(self, query, key, value, q_raw, k_raw).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


@torch.compiler.disable
def _cache_attend(processor: PackForcingAttnProcessor, q, k, v, q_raw, k_raw) -> torch.Tensor:
    """Where compiled code stops: the cache is host-side Python (dicts of blocks, the
    selection), so the compiler traces the projections, norms and RoPE around it and
    never the context, whose length it never sees. The layer is read here, not in the
    traced processor, so one compiled graph serves every layer."""
    session = processor.slot.session
    if processor.slot.copy_kept and session.mode in ("write", "compressed"):
        k, v, k_raw = k.clone(), v.clone(), k_raw.clone()
    return session.attend(processor.layer, q, k, v, q_raw, k_raw)


def install(transformer) -> tuple[SessionSlot, PositionedRotaryEmbed]:
    """Give every self-attention layer a cache-aware processor and wrap the RoPE module.
    Done once per model; later calls return the same slot."""
    if getattr(transformer, "fused_projections", False):
        raise ValueError("fused QKV projections are not supported; call unfuse_qkv_projections() first")
    slot = getattr(transformer, "_packforcing_slot", None)
    if slot is None:
        slot = SessionSlot()
        transformer.set_attn_processor(
            {
                name: PackForcingAttnProcessor(slot, int(name.split(".")[1])) if ".attn1." in name else proc
                for name, proc in transformer.attn_processors.items()
            }
        )
        transformer.rope = PositionedRotaryEmbed(transformer.rope)
        transformer._packforcing_slot = slot
    return slot, transformer.rope
