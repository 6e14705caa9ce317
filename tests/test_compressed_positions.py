"""Where compressed tokens sit in RoPE, hand-worked.

A compressed token summarises 2 latent frames x 4 x 4 full-resolution tokens, so it sits
at the centre of that region: block 3 (frames 12-15) at 256x192 (a 4 x 12 x 16 token
grid) compresses to a 2 x 3 x 4 grid at t in {12.5, 14.5}, h in {1.5, 5.5, 9.5}, w in
{1.5, 5.5, 9.5, 13.5}, row-major. Every axis differs in length, so no axis can stand in
for another."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from dense_reference import cis, fold_backbone, one_thread, rotate  # noqa: F401  (fixture)

from packforcing.cache import BlockKV
from packforcing.compression import HRCompressor, fit_lr_to_grid
from packforcing.config import PackForcingConfig
from packforcing.sampler import PackForcingSampler

pytestmark = pytest.mark.usefixtures("one_thread")

AXES = ((12.5, 14.5), (1.5, 5.5, 9.5), (1.5, 5.5, 9.5, 13.5))  # t, h, w centres, by hand
CENTRES = list(itertools.product(*AXES))  # row-major: w fastest
POSITIONS = tuple(torch.tensor(axis, dtype=torch.float64) for axis in zip(*CENTRES))


@pytest.fixture(scope="module")
def backbone():
    backbone = fold_backbone(256, 192)
    hr = HRCompressor(16, backbone.transformer.config.num_attention_heads * 12, (8, 8, 16, 16))
    torch.nn.init.normal_(hr.net[-1].weight, std=0.1)  # a trained-looking branch, not a zero one
    backbone.hr_compressor = hr.eval()
    return backbone


def compress(backbone, monkeypatch=None, **config):
    """Compress block 3 (frames 12-15); record layer 0's self-attention input and RoPE."""
    sampler = PackForcingSampler(backbone, PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=3, **config), seed=0)
    g = torch.Generator().manual_seed(5)
    latent = torch.randn(1, 16, 4, 24, 32, generator=g)
    pixels = torch.rand(1, 3, 16, 192, 256, generator=g) * 2 - 1
    text = backbone.encode_prompt("a compressed block")
    seen = {}
    hook = backbone.transformer.blocks[0].attn1.register_forward_pre_hook(lambda m, args: seen.update(hidden=args[0], rotary=args[3]))
    try:
        with torch.no_grad():
            out = sampler.compress(BlockKV(3, 12.0, 768), latent, pixels, text)
    finally:
        hook.remove()
    return out, seen, latent, pixels


def lr_tokens(backbone, pixels):
    """The LR branch, written out: pool 2 x 4 x 4, re-encode, the backbone's patch embedding."""
    latent = backbone.codec.encode(F.avg_pool3d(pixels, (2, 4, 4)))  # (1, 16, 2, 6, 8)
    return backbone.transformer.patch_embedding(latent).flatten(2).transpose(1, 2)


def test_the_hand_worked_centres_are_the_grid_row_major():
    assert CENTRES[:6] == [(12.5, 1.5, 1.5), (12.5, 1.5, 5.5), (12.5, 1.5, 9.5), (12.5, 1.5, 13.5), (12.5, 5.5, 1.5), (12.5, 5.5, 5.5)]
    assert len(CENTRES) == 24 and CENTRES[-1] == (14.5, 9.5, 13.5)
    # each axis: the region's first token + (span - 1) / 2, one span apart (2 frames, 4 tokens)
    assert AXES == (tuple(12 + 0.5 + 2 * i for i in range(2)), tuple(1.5 + 4 * i for i in range(3)), tuple(1.5 + 4 * i for i in range(4)))


def test_context_pass_rotates_at_the_region_centres(backbone):
    out, seen, _, _ = compress(backbone)
    angles = cis(*POSITIONS, 12)
    cos, sin = seen["rotary"]
    assert torch.allclose(cos[0, :, 0], angles.real.repeat_interleave(2, dim=1).float(), atol=1e-6)
    assert torch.allclose(sin[0, :, 0], angles.imag.repeat_interleave(2, dim=1).float(), atol=1e-6)
    attn = backbone.transformer.blocks[0].attn1
    with torch.no_grad():
        raw = attn.norm_k(attn.to_k(seen["hidden"])).unflatten(2, (attn.heads, -1))
    assert (out.index, out.start_frame, out.tokens, out.compressed) == (3, 12.0, 24, True)
    assert torch.allclose(out.keys[0], rotate(raw, *POSITIONS), atol=1e-5)
    assert torch.equal(out.key_sum, raw.sum(1))  # scored on pre-RoPE keys
    # negative control: the corner of the region (12, 0, 0), not its centre
    assert not torch.allclose(out.keys[0], rotate(raw, POSITIONS[0] - 0.5, POSITIONS[1] - 1.5, POSITIONS[2] - 1.5), atol=1e-3)


@pytest.mark.parametrize("compression", ["lr", "hr", "hr+lr"])
def test_projection_keys_are_the_layers_own_projections_at_the_centres(backbone, compression):
    out, _, latent, pixels = compress(backbone, compression=compression, kv_source="projection")
    model = backbone.transformer
    with torch.no_grad():
        hr = backbone.hr_compressor(latent).flatten(2).transpose(1, 2)
        tokens = {"lr": lr_tokens(backbone, pixels), "hr": hr, "hr+lr": lr_tokens(backbone, pixels) + hr}[compression]
        for layer, block in enumerate(model.blocks):
            attn = block.attn1
            raw = attn.norm_k(attn.to_k(tokens)).unflatten(2, (attn.heads, -1))
            assert torch.allclose(out.keys[layer], rotate(raw, *POSITIONS), atol=1e-5), layer
            assert torch.allclose(out.values[layer], attn.to_v(tokens).unflatten(2, (attn.heads, -1)), atol=1e-6)
        first = model.blocks[0].attn1
        assert torch.allclose(out.key_sum, first.norm_k(first.to_k(tokens)).unflatten(2, (first.heads, -1)).sum(1), atol=1e-5)


@pytest.mark.parametrize("compression", ["lr", "hr", "hr+lr"])
def test_context_pass_feeds_the_compressed_tokens_in(backbone, compression):
    seen = {}
    model = backbone.transformer
    hook = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.update(tokens=args[0]))
    try:
        _, _, latent, pixels = compress(backbone, compression=compression)
    finally:
        hook.remove()
    with torch.no_grad():
        hr = backbone.hr_compressor(latent).flatten(2).transpose(1, 2)
        lr = lr_tokens(backbone, pixels)
    want = {"lr": lr, "hr": hr, "hr+lr": lr + hr}[compression]
    assert torch.allclose(seen["tokens"], want, atol=1e-5)
    assert not torch.allclose(hr, lr, atol=1e-3)  # the branches differ, so each case is its own check


def test_hr_branch_is_the_papers_schedule():
    # 16 -> 32 s(2,1,1) -> 128 s(1,2,2) -> 512 s(1,2,2) -> 2048 s(1,2,2) -> 1536 s1, kernel = stride
    convs = [m for m in HRCompressor().net if isinstance(m, torch.nn.Conv3d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (16, 32, (2, 1, 1), (2, 1, 1)), (32, 128, (1, 2, 2), (1, 2, 2)), (128, 512, (1, 2, 2), (1, 2, 2)),
        (512, 2048, (1, 2, 2), (1, 2, 2)), (2048, 1536, (1, 1, 1), (1, 1, 1))]
    assert [type(m).__name__ for m in HRCompressor().net] == ["Conv3d", "SiLU"] * 4 + ["Conv3d"]


def test_lr_latent_is_cropped_or_zero_padded_to_the_grid():
    latent = torch.arange(3 * 5 * 9, dtype=torch.float32).view(1, 1, 3, 5, 9)
    cropped = fit_lr_to_grid(latent, (2, 2, 3), (1, 2, 2))  # target (2, 4, 6): keep the first of each axis
    assert torch.equal(cropped, latent[:, :, :2, :4, :6])
    small = torch.ones(1, 1, 1, 3, 5)
    padded = fit_lr_to_grid(small, (2, 2, 3), (1, 2, 2))  # zeros after the data on every axis
    assert padded.shape == (1, 1, 2, 4, 6) and padded.sum() == 15
    assert torch.equal(padded[:, :, :1, :3, :5], small) and padded[:, :, 1:].abs().sum() == 0
    assert padded[:, :, :, 3:].abs().sum() == 0 and padded[:, :, :, :, 5:].abs().sum() == 0


def test_the_span_follows_the_patch():
    """The HR branch strides 2 x 8 x 8 latent cells: Wan's 2 x 2 patch makes that 2 x 4 x 4
    tokens, a 4 x 4 patch (the camera embedded model) 2 x 2 x 2."""
    from packforcing.compression import token_span

    assert token_span((1, 2, 2)) == (2.0, 4.0, 4.0)
    assert token_span((1, 4, 4)) == (2.0, 2.0, 2.0)
    assert token_span((1, 1, 1)) == (2.0, 8.0, 8.0)
