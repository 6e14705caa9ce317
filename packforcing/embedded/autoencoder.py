"""A small learned autoencoder in the VAE's role (the option beside the fixed WorldCodec).

Same compression ratio as Wan's VAE: 4 pixel frames x 8 x 8 pixels -> one latent pixel
of 16 channels, so 64x64 frames give an 8x8 latent and, with transformer patch (1, 2, 2),
a 1-s block (4 latent frames) is 64 tokens as with the DCT codec and patch (1, 4, 4).

Every latent frame is made from, and decodes into, exactly its own 4 pixel frames (the
4 frames are stacked as channels of a 2-D conv net; no state crosses latent frames), so
the streaming decoder is a full decode taken a few latent frames at a time, as
WorldCodec's. Latents are normalised with per-channel mean / std measured after
training and frozen in config.json, so channels have about zero mean and unit std.
Weights: assets/embedded/autoencoder/ (trained by train_autoencoder.py).
"""

from __future__ import annotations

import json
import os

import torch
from einops import rearrange
from torch import nn

AE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "assets", "embedded", "autoencoder"
)
TEMPORAL = 4
SPATIAL = 8
LATENT_CHANNELS = 16
DEFAULT_WIDTHS = (32, 64, 96)  # 32x32, 16x16 and 8x8 feature maps


class Residual(nn.Module):
    """x + conv(silu(x)): keeps a deep stack of 3x3 convs easy to train from scratch."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(nn.functional.silu(x))


class WorldAutoencoder(nn.Module):
    """Raw (unnormalised) encoder and decoder over one 4-frame group at a time:
    (N, 12, H, W) -> (N, 16, H/8, W/8) -> (N, 12, H, W)."""

    def __init__(self, widths: tuple[int, int, int] = DEFAULT_WIDTHS):
        super().__init__()
        if len(widths) != 3 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths={widths} must be 3 positive ints (32x32, 16x16, 8x8 feature widths)")
        w0, w1, w2 = (int(w) for w in widths)
        self.widths = (w0, w1, w2)
        c = 3 * TEMPORAL
        act = nn.SiLU()
        self.encoder = nn.Sequential(
            nn.Conv2d(c, w1, 4, stride=4), Residual(w1), act,
            nn.Conv2d(w1, w2, 2, stride=2), act,
            nn.Conv2d(w2, LATENT_CHANNELS, 1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(LATENT_CHANNELS, w2, 3, padding=1), Residual(w2), act,
            nn.ConvTranspose2d(w2, w1, 2, stride=2), Residual(w1), act,
            nn.ConvTranspose2d(w1, w0, 2, stride=2), Residual(w0), act,
            nn.Conv2d(w0, 4 * c, 3, padding=1), nn.PixelShuffle(2),
        )  # fmt: skip


def to_groups(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, 4F, H, W) -> (B*F, 12, H, W): each latent frame's 4 pixel frames as channels."""
    return rearrange(pixels, "b c (f t) h w -> (b f) (t c) h w", t=TEMPORAL)


def from_groups(groups: torch.Tensor, batch: int) -> torch.Tensor:
    return rearrange(groups, "(b f) (t c) h w -> b c (f t) h w", b=batch, t=TEMPORAL)


class AutoencoderCodec:
    """WorldAutoencoder behind the Codec interface (packforcing.backbone.Codec)."""

    latent_channels = LATENT_CHANNELS
    spatial_factor = SPATIAL
    temporal_factor = TEMPORAL
    first_frame_alone = False

    def __init__(self, model: WorldAutoencoder, mean=None, std=None):
        self.model = model.eval().requires_grad_(False)
        shape = (1, LATENT_CHANNELS, 1, 1, 1)
        self.mean = torch.zeros(shape) if mean is None else torch.as_tensor(mean, dtype=torch.float32).view(shape)
        self.std = torch.ones(shape) if std is None else torch.as_tensor(std, dtype=torch.float32).view(shape)

    def raw_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised latent (B, 16, ceil(T/4), H/8, W/8) of (B, 3, T, H, W) pixels in [-1, 1]."""
        if pixels.dim() != 5 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, T, H, W), got {tuple(pixels.shape)}")
        b, _, t, h, w = pixels.shape
        if h % SPATIAL or w % SPATIAL:
            raise ValueError(f"height and width must be multiples of {SPATIAL}, got {h}x{w}")
        x = pixels.float()
        if t % TEMPORAL:  # as WorldCodec: pad by repeating the last frame
            x = torch.cat([x, x[:, :, -1:].expand(-1, -1, TEMPORAL - t % TEMPORAL, -1, -1)], dim=2)
        z = self.model.encoder(to_groups(x))
        return rearrange(z, "(b f) c h w -> b c f h w", b=b)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised (B, 16, ceil(T/4), H/8, W/8)."""
        z = self.raw_encode(pixels)
        return ((z - self.mean.to(z.device)) / self.std.to(z.device)).to(pixels.dtype)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, 16, F, h, w) -> (B, 3, 4F, 8h, 8w) clamped to [-1, 1]."""
        if latent.dim() != 5 or latent.shape[1] != LATENT_CHANNELS:
            raise ValueError(f"latent must be (B, {LATENT_CHANNELS}, F, h, w), got {tuple(latent.shape)}")
        z = latent.float() * self.std.to(latent.device) + self.mean.to(latent.device)
        out = self.model.decoder(rearrange(z, "b c f h w -> (b f) c h w"))
        return from_groups(out, latent.shape[0]).clamp(-1, 1).to(latent.dtype)

    def stream_decoder(self) -> AutoencoderStreamDecoder:
        return AutoencoderStreamDecoder(self)


class AutoencoderStreamDecoder:
    """decode_next(latent frames) -> their 4n pixel frames; latent frames decode
    independently, so the concatenation of calls equals decode() of the whole."""

    def __init__(self, codec: AutoencoderCodec):
        self.codec = codec

    def decode_next(self, latent: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(latent)


def save_codec(model: WorldAutoencoder, mean, std, directory: str, metadata: dict | None = None) -> str:
    """autoencoder.safetensors + config.json (widths and the frozen latent stats)."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "autoencoder.safetensors")
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, path)
    config = {
        "architecture": "world-autoencoder",
        "widths": list(model.widths),
        "latent_channels": LATENT_CHANNELS,
        "temporal_factor": TEMPORAL,
        "spatial_factor": SPATIAL,
        "latent_mean": [round(float(v), 6) for v in torch.as_tensor(mean).flatten()],
        "latent_std": [round(float(v), 6) for v in torch.as_tensor(std).flatten()],
        **(metadata or {}),
    }
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return path


def load_codec(directory: str = AE_DIR) -> AutoencoderCodec:
    """The trained codec from `directory` (safetensors; nothing is unpickled)."""
    from safetensors.torch import load_file

    config_path = os.path.join(directory, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"no autoencoder at {directory!r} (config.json missing); train one with train_autoencoder"
        )
    with open(config_path) as f:
        config = json.load(f)
    if config.get("architecture") != "world-autoencoder":
        raise ValueError(f"{config_path}: architecture {config.get('architecture')!r}, expected 'world-autoencoder'")
    model = WorldAutoencoder(tuple(config["widths"]))
    model.load_state_dict(load_file(os.path.join(directory, "autoencoder.safetensors")))
    return AutoencoderCodec(model, config["latent_mean"], config["latent_std"])
