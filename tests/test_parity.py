"""Cached block-by-block generation == one full forward with a block-causal mask
(x-transformers' KV-cache test, on a tiny diffusers WanTransformer3DModel)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from packforcing.backbones.tiny import build_tiny_random
from packforcing.config import PackForcingConfig
from packforcing.rope import PositionedRotaryEmbed
from packforcing.sampler import PackForcingSampler

BLOCKS = 3


class MaskedWanProcessor:
    """Wan's self-attention with an explicit boolean mask (Wan's blocks pass none)."""

    mask = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from packforcing.rope import apply_rotary

        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
        v = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        q, k = apply_rotary(q, *rotary_emb), apply_rotary(k, *rotary_emb)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=self.mask)
        return attn.to_out[0](out.transpose(1, 2).flatten(2, 3))


def reference_blocks(model, latent_shape, text, config, seed, use_mask=True):
    """Generate BLOCKS blocks where every forward runs over the whole sequence so far."""
    proc = MaskedWanProcessor()
    model.set_attn_processor({n: proc if ".attn1." in n else p for n, p in model.attn_processors.items()})
    gen = torch.Generator().manual_seed(seed)
    per_block = latent_shape[2] * (latent_shape[3] // 2) * (latent_shape[4] // 2)
    clean, sigmas = [], config.sigmas
    for c in range(BLOCKS):
        seq_blocks = torch.arange(c + 1).repeat_interleave(per_block)
        proc.mask = (seq_blocks[:, None] >= seq_blocks[None, :]) if use_mask else None
        x = torch.randn(latent_shape, generator=gen)
        for i, sigma in enumerate(sigmas):
            t = torch.cat([torch.zeros(c * per_block), torch.full((per_block,), sigma * 1000.0)])[None]
            full = torch.cat(clean + [x], dim=2)
            v = model(full, timestep=t, encoder_hidden_states=text, return_dict=False)[0][:, :, -latent_shape[2]:]
            x0 = (x.double() - sigma * v.double()).float()
            if i + 1 < len(sigmas):
                x = ((1 - sigmas[i + 1]) * x0.double() + sigmas[i + 1]
                     * torch.randn(latent_shape, generator=gen).double()).float()
        clean.append(x0)
    return clean


def cached_blocks(backbone, config, text, seed):
    sampler = PackForcingSampler(backbone, config, seed=seed)
    out = []
    for c in range(BLOCKS):
        sampler.memory.cache.begin_block(c, c * config.block_frames)
        sampler.memory.cache.set_selection(list(sampler.memory.cache.mid))
        x0 = sampler.denoise_block(c, text)
        sampler.memory.cache.add_block(sampler.write_block(c, x0, text))
        leaving = sampler.memory.cache.pop_overflow()
        if leaving is not None:
            sampler.memory.cache.archive(leaving)
        out.append(x0)
    return out


@pytest.fixture(scope="module")
def setup():
    backbone = build_tiny_random(width=64, height=64)  # latent 8x8 -> 16 tokens per frame
    reference_model = copy.deepcopy(backbone.transformer)
    text = backbone.encode_prompt("parity")
    config = PackForcingConfig(policy="full", rope_repair=False, sink_frames=4)
    return backbone, reference_model, text, config


def test_cached_equals_block_causal_full_forward(setup):
    backbone, reference_model, text, config = setup
    cached = cached_blocks(backbone, config, text, seed=3)
    shape = cached[0].shape
    with torch.no_grad():
        reference = reference_blocks(reference_model, shape, text, config, seed=3)
    for c, (a, b) in enumerate(zip(cached, reference)):
        assert (a - b).abs().max().item() <= 1e-5, f"block {c} differs"
    assert (cached[-1] - cached[0]).abs().max() > 0.1  # the blocks are not trivially equal


def test_without_mask_parity_breaks(setup):
    backbone, reference_model, text, config = setup
    cached = cached_blocks(backbone, config, text, seed=3)
    with torch.no_grad():
        reference = reference_blocks(reference_model, cached[0].shape, text, config, seed=3, use_mask=False)
    # Block 0 alone has nothing to leak; later clean blocks see the future without a mask.
    assert (cached[0] - reference[0]).abs().max() <= 1e-5
    assert (cached[-1] - reference[-1]).abs().max() > 1e-3


def test_wrong_rope_offset_breaks_parity(setup, monkeypatch):
    backbone, reference_model, text, config = setup
    with torch.no_grad():
        reference = reference_blocks(reference_model, (1, 16, 4, 8, 8), text, config, seed=3)
    original = PositionedRotaryEmbed.place
    # Every block numbered from frame 0, as Wan's own RoPE module would do.
    monkeypatch.setattr(PositionedRotaryEmbed, "place", lambda self, offset=0.0, *a: original(self, 0.0, *a))
    cached = cached_blocks(backbone, config, text, seed=3)
    assert max((a - b).abs().max().item() for a, b in zip(cached, reference)) > 1e-3


def test_proportional_bias_equals_repeating_a_compressed_token():
    """log(n) added to a key's logit == that key (and its value) present n times."""
    from packforcing.attention import sdpa

    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 5, 2, 8, generator=g) for _ in range(3))
    bias = torch.tensor([0.0, math.log(4), 0.0, 0.0, 0.0])[None, None, None, :]
    repeat = torch.tensor([0, 1, 1, 1, 1, 2, 3, 4])
    assert torch.allclose(sdpa(q, k, v, bias), sdpa(q, k[:, repeat], v[:, repeat]), atol=1e-6)
    assert not torch.allclose(sdpa(q, k, v), sdpa(q, k[:, repeat], v[:, repeat]), atol=1e-3)  # negative control


def test_context_bias_marks_exactly_the_compressed_tokens():
    from packforcing.cache import BlockKV, KVCache

    config = PackForcingConfig(top_k=2, mid_capacity=4, sink_frames=4, proportional_attention=True)
    cache = KVCache(config, num_layers=1, tokens_per_block=256, compressed_tokens=8)
    for c in range(5):  # block 0 sinks; blocks 1-3 pass through recent into the mid bank
        cache.begin_block(c, 4.0 * c)
        cache.set_selection(list(cache.mid)[-2:])
        cache.add_block(BlockKV(c, 4.0 * c, 256))
        leaving = cache.pop_overflow()
        if leaving is not None:
            cache.archive(BlockKV(leaving.index, leaving.start_frame, 8, compressed=True))
    cache.begin_block(5, 20.0)
    cache.set_selection([1, 3])
    bias = cache.context_bias()
    # sink 0 (256), mid 1 and 3 (8 each), recent 4 (256)
    assert bias.shape == (256 + 16 + 256,)
    assert torch.equal(bias[256:272], torch.full((16,), math.log(32)))
    assert bias[:256].abs().sum() == 0 and bias[272:].abs().sum() == 0
    off = KVCache(PackForcingConfig(top_k=2, mid_capacity=4, sink_frames=4), 1, 256, 8)
    assert off.context_bias() is None
