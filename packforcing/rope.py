"""3-D RoPE at arbitrary positions, and moving cached keys in time.

Wan splits each head's channels into temporal / height / width parts (44/42/42 of 128)
and rotates interleaved channel pairs. Keys are cached already rotated at their
original position; moving a block from t to t' multiplies its temporal pairs by
e^{i theta (t' - t)}. The shift is always computed from absolute positions, so
rotations never accumulate.
"""

import torch
from torch import nn

THETA = 10000.0


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """(t_dim, h_dim, w_dim), exactly as diffusers' WanRotaryPosEmbed."""
    h_dim = w_dim = 2 * (head_dim // 6)
    return head_dim - h_dim - w_dim, h_dim, w_dim


def _angles(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(S,) positions -> (S, dim) angles, each frequency repeated for its channel pair."""
    inv_freq = 1.0 / (THETA ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return angles.repeat_interleave(2, dim=1)


def rope_cos_sin(t: torch.Tensor, h: torch.Tensor, w: torch.Tensor, head_dim: int):
    """cos/sin of shape (1, S, 1, head_dim), the layout Wan's processor expects."""
    t_dim, h_dim, w_dim = rope_split(head_dim)
    angles = torch.cat([_angles(t, t_dim), _angles(h, h_dim), _angles(w, w_dim)], dim=1)
    # float64 angles, float32 result: bit-identical to diffusers' WanRotaryPosEmbed buffers.
    return angles.cos().float()[None, :, None, :], angles.sin().float()[None, :, None, :]


def grid_positions(frames: int, height: int, width: int, t0: float = 0.0, spacing: tuple = (1.0, 1.0, 1.0),
                   center=(0.0, 0.0, 0.0)):
    """Token positions of a (frames, height, width) grid in row-major token order."""
    st, sh, sw = spacing
    ct, ch, cw = center
    tt = t0 + ct + st * torch.arange(frames, dtype=torch.float64)
    hh = ch + sh * torch.arange(height, dtype=torch.float64)
    ww = cw + sw * torch.arange(width, dtype=torch.float64)
    t, h, w = torch.meshgrid(tt, hh, ww, indexing="ij")
    return t.reshape(-1), h.reshape(-1), w.reshape(-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Same arithmetic as diffusers' WanAttnProcessor (x: B, S, H, D)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on `device` without stalling the host: a plain copy from pageable
    memory waits for the GPU to drain; a pinned one is queued behind its work."""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def temporal_rotation(deltas: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (1, S, 1, t_dim) moving each token by its own delta (latent frames), fp32."""
    t_dim, _, _ = rope_split(head_dim)
    angles = _angles(deltas, t_dim).to(torch.float32)
    return angles.cos()[None, :, None], angles.sin()[None, :, None]


def rotate_in_time(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply a temporal_rotation to rotated keys (B, S, H, D); spatial pairs untouched."""
    t_dim = cos.shape[-1]
    temporal = apply_rotary(keys[..., :t_dim].float(), cos.to(keys.device), sin.to(keys.device)).to(keys.dtype)
    return torch.cat([temporal, keys[..., t_dim:]], dim=-1)


class PositionedRotaryEmbed(nn.Module):
    """Stands in for `model.rope`: same output as WanRotaryPosEmbed, at positions we choose.

    Wan's own module always numbers frames from 0; a streamed block must sit at its
    absolute frame, and compressed tokens at the centres of the regions they summarise.
    """

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original = original
        self.head_dim = original.attention_head_dim
        self.patch_size = original.patch_size
        self.frame_offset = 0.0
        self.spacing = (1.0, 1.0, 1.0)
        self.center = (0.0, 0.0, 0.0)
        self._last: tuple | None = None  # (placement, (cos, sin)): a block's passes share one placement

    def place(self, frame_offset: float = 0.0, spacing=(1.0, 1.0, 1.0), center=(0.0, 0.0, 0.0)) -> None:
        self.frame_offset, self.spacing, self.center = float(frame_offset), tuple(spacing), tuple(center)

    def forward(self, hidden_states: torch.Tensor):
        _, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.patch_size
        grid = (frames // p_t, height // p_h, width // p_w)
        key = (grid, self.frame_offset, self.spacing, self.center, hidden_states.device)
        if self._last is None or self._last[0] != key:  # made and copied once per block, not per pass
            cos, sin = rope_cos_sin(*grid_positions(*grid, self.frame_offset, self.spacing, self.center), self.head_dim)
            self._last = key, (to_device(cos, hidden_states.device), to_device(sin, hidden_states.device))
        return self._last[1]
