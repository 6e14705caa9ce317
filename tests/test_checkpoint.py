"""Self-Forcing checkpoint -> diffusers conversion: every key of the real 1.3B config on the
meta device, and a tiny synthetic checkpoint whose converted forward equals an independent
re-implementation of the original Wan block on the original key names."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import original_key_shapes

from packforcing.backbones import wan_checkpoint as wc

TINY = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=24,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=16,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)


def test_real_config_keys_convert_to_every_diffusers_parameter():
    original = original_key_shapes(wc.WAN_1_3B_CONFIG)
    # the numbers of the real self_forcing_dmd.pt generator (DESIGN.md)
    assert len(original) == 825
    assert sum(math.prod(s) for s in original.values()) == 1_418_996_800
    converted = wc.convert_self_forcing_state_dict({k: torch.empty(s, device="meta") for k, s in original.items()})
    expected = wc.expected_shapes(wc.WAN_1_3B_CONFIG)
    assert sorted(converted) == sorted(expected)
    assert all(converted[k].shape == expected[k] for k in expected)
    wc.check_state_dict(converted, wc.WAN_1_3B_CONFIG)  # raises on any mismatch
    assert wc.convert_key("model.blocks.7.norm3.weight") == "blocks.7.norm2.weight"
    assert wc.convert_key("model.blocks.7.self_attn.o.bias") == "blocks.7.attn1.to_out.0.bias"
    assert wc.convert_key("model.head.modulation") == "scale_shift_table"


# --- an independent implementation of the original Wan T2V forward, on original names ---

def _rms(x, w, eps):
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * w


def _rope_tables(head_dim, max_len=1024):
    def params(dim):
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float64), 1.0 / 10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        return torch.polar(torch.ones_like(freqs), freqs)

    d = head_dim
    return torch.cat([params(d - 4 * (d // 6)), params(2 * (d // 6)), params(2 * (d // 6))], dim=1)


def _rope_apply(x, grid, freqs):
    b, s, n, d = x.shape
    f, h, w = grid
    c = d // 2
    parts = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    table = torch.cat(
        [
            parts[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            parts[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
            parts[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(s, 1, -1)
    xc = torch.view_as_complex(x.double().reshape(b, s, n, c, 2))
    return torch.view_as_real(xc * table).flatten(3).type_as(x)


def _attention(sd, prefix, x, context, cfg, grid=None, freqs=None):
    n, d = cfg["num_attention_heads"], cfg["attention_head_dim"]
    q = _rms(F.linear(x, sd[prefix + "q.weight"], sd[prefix + "q.bias"]), sd[prefix + "norm_q.weight"], cfg["eps"])
    k = _rms(F.linear(context, sd[prefix + "k.weight"], sd[prefix + "k.bias"]), sd[prefix + "norm_k.weight"], cfg["eps"])
    v = F.linear(context, sd[prefix + "v.weight"], sd[prefix + "v.bias"])
    q, k, v = (t.unflatten(-1, (n, d)) for t in (q, k, v))
    if grid is not None:
        q, k = _rope_apply(q, grid, freqs), _rope_apply(k, grid, freqs)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2).flatten(2)
    return F.linear(out, sd[prefix + "o.weight"], sd[prefix + "o.bias"])


def original_wan_forward(state, cfg, x, t, context):
    sd = {k.removeprefix("model."): v for k, v in state.items()}
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    eps = cfg["eps"]
    ln = lambda h, w=None, b=None: F.layer_norm(h.float(), (dim,), w, b, eps).type_as(h)  # noqa: E731
    h = F.conv3d(x, sd["patch_embedding.weight"], sd["patch_embedding.bias"], stride=cfg["patch_size"])
    batch, _, f, hh, ww = h.shape
    h = h.flatten(2).transpose(1, 2)
    half = cfg["freq_dim"] // 2
    angles = torch.outer(t.double(), torch.pow(10000, -torch.arange(half, dtype=torch.float64) / half))
    e = torch.cat([angles.cos(), angles.sin()], dim=1).float()
    e = F.linear(F.silu(F.linear(e, sd["time_embedding.0.weight"], sd["time_embedding.0.bias"])), sd["time_embedding.2.weight"], sd["time_embedding.2.bias"])
    e0 = F.linear(F.silu(e), sd["time_projection.1.weight"], sd["time_projection.1.bias"]).unflatten(1, (6, dim))
    ctx = F.linear(F.gelu(F.linear(context, sd["text_embedding.0.weight"], sd["text_embedding.0.bias"]), approximate="tanh"), sd["text_embedding.2.weight"], sd["text_embedding.2.bias"])
    freqs = _rope_tables(cfg["attention_head_dim"])
    for i in range(cfg["num_layers"]):
        b = f"blocks.{i}."
        m = (sd[b + "modulation"] + e0).chunk(6, dim=1)
        normed = ln(h) * (1 + m[1]) + m[0]
        y = _attention(sd, b + "self_attn.", normed, normed, cfg, (f, hh, ww), freqs)
        h = h + y * m[2]
        h = h + _attention(sd, b + "cross_attn.", ln(h, sd[b + "norm3.weight"], sd[b + "norm3.bias"]), ctx, cfg)
        y = F.linear(F.gelu(F.linear(ln(h) * (1 + m[4]) + m[3], sd[b + "ffn.0.weight"], sd[b + "ffn.0.bias"]), approximate="tanh"), sd[b + "ffn.2.weight"], sd[b + "ffn.2.bias"])
        h = h + y * m[5]
    shift, scale = (sd["head.modulation"] + e.unsqueeze(1)).chunk(2, dim=1)
    h = F.linear(ln(h) * (1 + scale) + shift, sd["head.head.weight"], sd["head.head.bias"])
    p0, p1, p2 = cfg["patch_size"]
    h = h.view(batch, f, hh, ww, p0, p1, p2, cfg["out_channels"])
    return torch.einsum("bfhwpqrc->bcfphqwr", h).reshape(batch, cfg["out_channels"], f * p0, hh * p1, ww * p2)


def synthetic_state(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in original_key_shapes(cfg).items():
        value = 0.2 * torch.randn(shape, generator=gen)
        if "norm" in key and key.endswith("weight"):
            value = 1.0 + value
        state[key] = value
    return state


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 4, 6, generator=gen)
    context = torch.randn(1, 5, 16, generator=gen)
    return x, torch.tensor([937.5]), context


@pytest.fixture
def checkpoint(tmp_path):
    ema, live = synthetic_state(TINY, 1), synthetic_state(TINY, 2)
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator": live, "generator_ema": ema, "critic": {"w": torch.zeros(2)}}, path)
    return path, ema, live


def _diffusers_forward(model, x, t, context):
    with torch.no_grad():
        return model(x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]


def test_tiny_checkpoint_forward_equals_original_block(checkpoint, inputs, tmp_path):
    path, ema, live = checkpoint
    model = wc.load_self_forcing_transformer(str(path), dtype=torch.float32, device="cpu", config=TINY, cache_dir=str(tmp_path / "cache"))
    assert isinstance(model.condition_embedder.timesteps_proj, wc.Float64Timesteps)
    out = _diffusers_forward(model, *inputs)
    ref = original_wan_forward(ema, TINY, *inputs)
    assert out.shape == ref.shape == (1, 4, 3, 4, 6)
    assert (out - ref).abs().max().item() < 1e-4
    # negative control: the live generator (not the EMA the official inference uses) differs
    assert (out - original_wan_forward(live, TINY, *inputs)).abs().max().item() > 1e-2


def test_comparison_is_sensitive_to_a_wrong_mapping(checkpoint, inputs, tmp_path):
    path, ema, _ = checkpoint
    swapped = dict(ema)
    swapped["model.blocks.0.self_attn.q.weight"], swapped["model.blocks.0.self_attn.k.weight"] = ema["model.blocks.0.self_attn.k.weight"], ema["model.blocks.0.self_attn.q.weight"]
    bad = tmp_path / "swapped.pt"
    torch.save({"generator_ema": swapped}, bad)
    model = wc.load_self_forcing_transformer(str(bad), dtype=torch.float32, device="cpu", config=TINY, cache_dir=str(tmp_path / "cache"))
    assert (_diffusers_forward(model, *inputs) - original_wan_forward(ema, TINY, *inputs)).abs().max().item() > 1e-3


def test_converted_weights_are_cached_and_reused(checkpoint, tmp_path, monkeypatch, inputs):
    path, ema, _ = checkpoint
    cache = tmp_path / "cache"
    first = wc.load_self_forcing_transformer(str(path), dtype=torch.float32, device="cpu", config=TINY, cache_dir=str(cache))
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.endswith(wc.CONVERTED_SUFFIX)

    def no_conversion(_):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(wc, "convert_self_forcing_state_dict", no_conversion)
    second = wc.load_self_forcing_transformer(str(path), dtype=torch.float32, device="cpu", config=TINY, cache_dir=str(cache))
    assert torch.equal(_diffusers_forward(first, *inputs), _diffusers_forward(second, *inputs))
    # the cached file is itself a valid source
    third = wc.load_self_forcing_transformer(str(files[0]), dtype=torch.bfloat16, device="cpu", config=TINY)
    assert {p.dtype for p in third.parameters()} == {torch.bfloat16}


def test_bf16_load_is_close_to_the_fp32_reference(checkpoint, inputs, tmp_path):
    path, ema, _ = checkpoint
    model = wc.load_self_forcing_transformer(str(path), dtype=torch.bfloat16, device="cpu", config=TINY, cache_dir=str(tmp_path / "c"))
    x, t, context = inputs
    out = _diffusers_forward(model, x.bfloat16(), t, context.bfloat16()).float()
    ref = original_wan_forward(ema, TINY, *inputs)
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.05


def test_float64_timestep_embedding_is_the_originals():
    from diffusers.models.embeddings import Timesteps

    t = torch.tensor([1000.0, 937.5, 833.3333, 625.0])
    ours = wc.Float64Timesteps(256)(t)
    assert ours.dtype == torch.float64 and ours.shape == (4, 256)
    half = torch.arange(128, dtype=torch.float64) / 128
    angles = t.double()[:, None] * torch.pow(10000.0, -half)[None]
    # float64 throughout: equal to the formula far below float32's resolution (1e-7)
    torch.testing.assert_close(ours, torch.cat([angles.cos(), angles.sin()], dim=1), rtol=0, atol=1e-12)
    diffusers_fp32 = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)(t)
    assert torch.allclose(ours.float(), diffusers_fp32, atol=1e-3)
    # why it matters: after the cast to bf16 they are not the same numbers
    assert not torch.equal(ours.to(torch.bfloat16), diffusers_fp32.to(torch.bfloat16))


# --- negative controls: clear errors, not shape tracebacks ---

def test_missing_key_is_named(tmp_path):
    state = synthetic_state(TINY, 3)
    del state["model.blocks.1.cross_attn.norm_k.weight"]
    path = tmp_path / "partial.pt"
    torch.save({"generator_ema": state}, path)
    with pytest.raises(wc.CheckpointError, match=r"1 missing: blocks\.1\.attn2\.norm_k\.weight"):
        wc.load_self_forcing_transformer(str(path), dtype=torch.float32, device="cpu", config=TINY, cache_dir=str(tmp_path))


def test_wrong_shape_is_named(tmp_path):
    state = synthetic_state(TINY, 3)
    state["model.blocks.0.ffn.0.weight"] = torch.zeros(31, 48)
    path = tmp_path / "wrong.pt"
    torch.save({"generator": state}, path)
    with pytest.raises(wc.CheckpointError, match=r"wrong shape: blocks\.0\.ffn\.net\.0\.proj\.weight: \(31, 48\) \(expected \(32, 48\)\)"):
        wc.load_self_forcing_transformer(str(path), dtype=torch.float32, device="cpu", config=TINY, cache_dir=str(tmp_path))


def test_wrong_model_size_names_the_mismatch(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save({"generator_ema": synthetic_state(TINY, 3)}, path)
    with pytest.raises(wc.CheckpointError, match="missing: blocks.2.") as err:
        wc.load_converted_state_dict(str(path), wc.WAN_1_3B_CONFIG, cache_dir=str(tmp_path))
    assert "wrong shape" in str(err.value)


def test_checkpoint_without_generator_is_rejected(tmp_path):
    path = tmp_path / "critic_only.pt"
    torch.save({"critic": {"w": torch.zeros(2)}, "step": 3}, path)
    with pytest.raises(wc.CheckpointError, match="no generator weights; expected one of \\['generator_ema', 'generator'\\]"):
        wc.load_converted_state_dict(str(path), TINY, cache_dir=str(tmp_path))


def test_without_the_norm_swap_the_cross_attention_norm_has_nowhere_to_go(monkeypatch):
    renames = tuple(r for r in wc.RENAMES if "norm_placeholder" not in r[0] + r[1] and r != ("norm3", "norm2"))
    monkeypatch.setattr(wc, "RENAMES", renames)
    state = wc.convert_self_forcing_state_dict({k: torch.empty(s, device="meta") for k, s in original_key_shapes(TINY).items()})
    with pytest.raises(wc.CheckpointError, match=r"missing: blocks\.0\.norm2\.bias.*unexpected: blocks\.0\.norm3\.bias"):
        wc.check_state_dict(state, TINY)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"generator_ema": synthetic_state(TINY, 3), "hook": _Unsafe()}, path)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        wc.load_converted_state_dict(str(path), TINY, cache_dir=str(tmp_path))


class _Unsafe:
    pass


def test_bad_sources_are_explained(tmp_path):
    with pytest.raises(wc.CheckpointError, match="without checkpoints/self_forcing_dmd.pt"):
        wc.load_converted_state_dict(str(tmp_path), TINY)
    with pytest.raises(wc.CheckpointError, match="not a file, a directory or a Hugging Face repo id"):
        wc.load_converted_state_dict("./no/such/file.pt", TINY)
