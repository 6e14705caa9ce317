"""The package's RoPE against diffusers' own: WanRotaryPosEmbed's tables, WanAttnProcessor's
attention output and the keys it rotates. A rotation the wrong way, a wrong frequency or a
wrong frame offset gives other numbers here, whatever the package's own helpers agree on."""

import pytest
import torch
from dense_reference import fold_backbone, grid, one_thread, rotate  # noqa: F401  (fixture)
from diffusers.models.transformers import transformer_wan
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, WanRotaryPosEmbed
from helpers import shift_keys_in_time

from packforcing.attention import CacheSession, PackForcingAttnProcessor, SessionSlot
from packforcing.cache import BlockKV, KVCache
from packforcing.config import PackForcingConfig
from packforcing.rope import PositionedRotaryEmbed

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES, SIDE = 4, 8  # a latent block (4, 8, 8) -> 4 x 4 x 4 = 64 tokens
PER_FRAME = (SIDE // 2) ** 2


@pytest.fixture(scope="module")
def model():
    return fold_backbone(64, 64).transformer


def wan_table(model, first_frame, frames=FRAMES):
    """diffusers' cos/sin for `frames` latent frames starting at `first_frame`: its module
    numbers frames from 0, so take the rows of a longer clip."""
    rope = WanRotaryPosEmbed(model.config.attention_head_dim, model.config.patch_size, 1024)
    cos, sin = rope(torch.zeros(1, 16, first_frame + frames, SIDE, SIDE))
    return cos[:, first_frame * PER_FRAME:], sin[:, first_frame * PER_FRAME:]


def package_processor(mode="plain", pending=None):
    session = CacheSession(KVCache(PackForcingConfig(), 1, FRAMES * PER_FRAME, 1))
    session.set_mode(mode, pending)
    slot = SessionSlot()
    slot.session = session
    return PackForcingAttnProcessor(slot, 0)


def diffusers_keys(model, hidden, table, monkeypatch):
    """The rotated keys diffusers' WanAttnProcessor attends with, and its output."""
    seen = {}
    dispatch = transformer_wan.dispatch_attention_fn

    def spy(query, key, value, **kwargs):
        seen["key"] = key
        return dispatch(query, key, value, **kwargs)

    monkeypatch.setattr(transformer_wan, "dispatch_attention_fn", spy)
    out = WanAttnProcessor()(model.blocks[0].attn1, hidden, None, None, table)
    monkeypatch.undo()
    return seen["key"], out


@pytest.mark.parametrize("offset", [0, 5])
def test_positioned_rope_equals_wan_rotary_pos_embed(model, offset):
    ours = PositionedRotaryEmbed(model.rope)
    ours.place(float(offset))
    cos, sin = ours(torch.zeros(1, 16, FRAMES, SIDE, SIDE))
    want_cos, want_sin = wan_table(model, offset)
    # the same table up to float32 rounding (a cos kernel's last bit differs between CPUs)
    torch.testing.assert_close(cos, want_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, want_sin, rtol=0, atol=1e-6)
    ours.place(float(offset + 1))  # negative control: one frame off
    assert not torch.allclose(ours(torch.zeros(1, 16, FRAMES, SIDE, SIDE))[1], want_sin, atol=1e-3)


def test_a_fresh_wrapper_is_wan_rotary_pos_embed_itself(model):
    # before any place(): frames from 0, unit spacing, no centre, as the module it replaces
    cos, sin = PositionedRotaryEmbed(model.rope)(torch.zeros(1, 16, FRAMES, SIDE, SIDE))
    want_cos, want_sin = wan_table(model, 0)
    # the same table up to float32 rounding (a cos kernel's last bit differs between CPUs)
    torch.testing.assert_close(cos, want_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, want_sin, rtol=0, atol=1e-6)


def test_attention_output_equals_wan_attn_processor(model, monkeypatch):
    hidden = torch.randn(1, FRAMES * PER_FRAME, model.config.num_attention_heads * 12, generator=torch.Generator().manual_seed(0))
    table = wan_table(model, 3)
    attn = model.blocks[0].attn1
    with torch.no_grad():
        _, want = diffusers_keys(model, hidden, table, monkeypatch)
        ours = package_processor()(attn, hidden, rotary_emb=table)
        backwards = package_processor()(attn, hidden, rotary_emb=(table[0], -table[1]))
    assert torch.allclose(ours, want, atol=1e-5)
    assert not torch.allclose(backwards, want, atol=1e-3)  # negative control: rotating the other way


def test_written_keys_and_a_temporal_shift_equal_wan_keys_at_the_new_frame(model, monkeypatch):
    hidden = torch.randn(1, FRAMES * PER_FRAME, model.config.num_attention_heads * 12, generator=torch.Generator().manual_seed(1))
    attn = model.blocks[0].attn1
    with torch.no_grad():
        block = BlockKV(1, 5.0, FRAMES * PER_FRAME)
        package_processor("write", block)(attn, hidden, rotary_emb=wan_table(model, 5))
        at_5, _ = diffusers_keys(model, hidden, wan_table(model, 5), monkeypatch)
        at_12, _ = diffusers_keys(model, hidden, wan_table(model, 12), monkeypatch)
        raw = attn.norm_k(attn.to_k(hidden)).unflatten(2, (attn.heads, -1))
    assert torch.allclose(block.keys[0], at_5, atol=1e-6)  # cached rotated at the block's own frame
    assert torch.allclose(shift_keys_in_time(block.keys[0], 7.0), at_12, atol=1e-5)
    assert not torch.allclose(shift_keys_in_time(block.keys[0], -7.0), at_12, atol=1e-3)  # negative control
    # the tests' own complex-multiply reference agrees with diffusers (the parity test relies on it)
    assert torch.allclose(rotate(raw, *grid(FRAMES, 4, 4, t0=12.0)), at_12, atol=1e-5)


def test_shift_moves_only_the_temporal_channels_by_exactly_delta():
    head_dim = 12  # split 4 / 4 / 4
    raw = torch.randn(1, 8, 1, head_dim, generator=torch.Generator().manual_seed(2))
    t, h, w = grid(2, 2, 2, t0=3.0)
    for delta in (1.0, 2.5, -3.0, 40.0):
        moved = shift_keys_in_time(rotate(raw, t, h, w), delta)
        assert torch.allclose(moved, rotate(raw, t + delta, h, w), atol=1e-5), delta
        assert torch.equal(moved[..., 4:], rotate(raw, t, h, w)[..., 4:])
