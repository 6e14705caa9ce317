"""What the sampler needs from a model: a Wan transformer, a codec (the VAE's role) and a
text encoder. The real 1.3B model, the embedded model and tiny test models differ only here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .compression import HRCompressor
from .config import PackForcingConfig
from .memory import ModelDims, compressed_grid
from .rope import to_device

PREDICTION_TYPES = ("flow_prediction", "sample")
# below this noise level a clean-latent prediction's velocity divides by it instead
# (as JiT does): (x - x0) / sigma would magnify the prediction's error without bound
SAMPLE_SIGMA_FLOOR = 0.05


class Codec(Protocol):
    """encode: (B, 3, T, H, W) pixels in [-1, 1] -> normalised latent (B, C, F, h, w);
    decode: the inverse, clamped to [-1, 1]; stream_decoder(): an object whose
    decode_next(latent_frames) returns the pixel frames those latent frames add, equal
    to the matching slice of a full decode."""

    latent_channels: int
    spatial_factor: int
    temporal_factor: int
    first_frame_alone: bool  # Wan's causal VAE: the first latent frame is one pixel frame

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...
    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...
    def stream_decoder(self): ...


@dataclass
class Backbone:
    name: str
    transformer: torch.nn.Module  # diffusers WanTransformer3DModel
    codec: Codec
    encode_prompt: Callable[[str], torch.Tensor]  # prompt -> (1, L, text_dim)
    width: int
    height: int
    fps: int = 16
    hr_compressor: HRCompressor | None = None
    describe_prompt: Callable[[str], list[str]] = field(default=lambda prompt: prompt.split())
    validate_prompt: Callable[[str], None] | None = None
    max_seconds: float = 120.0
    default_config: PackForcingConfig = field(default_factory=PackForcingConfig)  # the config it was trained for
    # called before every transformer pass with the absolute latent frame of the block it
    # processes, which RoPE packing hides from attention (the embedded model's camera clock)
    on_frame: Callable[[float], None] | None = None
    # models with a camera: called once per block, before its first pass, with the block
    # index, the direction asked for (left / still / right; None: the model's default for
    # the prompt) and the prompt; returns what the trace records as the block's camera
    move_camera: Callable[[int, str | None, str], dict | None] | None = None
    # what the transformer outputs: "flow_prediction" (the velocity, as Wan) or "sample" (the
    # clean latent, turned into the velocity here). A patch with more values than the model's
    # width cannot carry the noise through to a velocity, and what it drops stays in the frames.
    prediction_type: str = "flow_prediction"

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {self.prediction_type!r} is not one of {PREDICTION_TYPES}")

    def velocity(self, latent: torch.Tensor, output: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The flow velocity of a denoising pass from the transformer's output; `timestep`: one per batch element."""
        if self.prediction_type == "flow_prediction":
            return output
        sigma = (timestep.float() / self.default_config.num_train_timesteps).clamp(min=SAMPLE_SIGMA_FLOOR)
        return ((latent.float() - output.float()) / sigma.view(-1, *[1] * (latent.dim() - 1))).to(output.dtype)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def patch(self) -> tuple[int, int, int]:
        return tuple(self.transformer.config.patch_size)

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.codec.spatial_factor, self.width // self.codec.spatial_factor

    def to(self, device=None, dtype=None) -> Backbone:
        """Place (and cast) the modules the sampler runs; returns self."""
        if device is not None or dtype is not None:
            self.transformer.to(device=device, dtype=dtype)
            if self.hr_compressor is not None:
                self.hr_compressor.to(device=device, dtype=dtype)
        return self

    def dims(self) -> ModelDims:
        cfg = self.transformer.config
        return ModelDims(
            num_layers=cfg.num_layers,
            inner_dim=cfg.num_attention_heads * cfg.attention_head_dim,
            dtype_bytes=torch.finfo(self.dtype).bits // 8,
            patch=self.patch,
            vae_spatial=self.codec.spatial_factor,
            vae_temporal=self.codec.temporal_factor,
        )

    def tokens_per_latent_frame(self) -> int:
        h, w = self.latent_hw
        return (h // self.patch[1]) * (w // self.patch[2])

    def compressed_grid(self, block_frames: int) -> tuple[int, int, int]:
        return compressed_grid(block_frames, *self.latent_hw)


class WanVAECodec:
    """diffusers' AutoencoderKLWan behind the Codec interface (latents normalised with
    the VAE config's latents_mean / latents_std, as Wan's pipelines do)."""

    first_frame_alone = True

    def __init__(self, vae):
        self.vae = vae
        cfg = vae.config
        self.latent_channels = cfg.z_dim
        self.spatial_factor = cfg.scale_factor_spatial or 2 ** (len(cfg.dim_mult) - 1)
        self.temporal_factor = cfg.scale_factor_temporal or 2 ** sum(cfg.temperal_downsample)
        shape = (1, cfg.z_dim, 1, 1, 1)
        self.mean = torch.tensor(cfg.latents_mean[: cfg.z_dim]).view(shape)
        self.std = torch.tensor(cfg.latents_std[: cfg.z_dim]).view(shape)
        self._placed: dict = {}  # (device, dtype) -> (mean, std): copied once, not at every decode

    def stats(self, like):
        """The latent normalisation (mean, std), on `like`'s device and dtype; copied
        there once, not at every decode and compression."""
        key = (like.device, like.dtype)
        if key not in self._placed:
            self._placed[key] = tuple(to_device(t, like.device).to(like.dtype) for t in (self.mean, self.std))
        return self._placed[key]

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        mu = self.vae.encode(pixels.to(dtype)).latent_dist.mode()
        mean, std = self.stats(mu)
        return (mu - mean) / std

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self.stats(latent)
        dtype = next(self.vae.parameters()).dtype
        return self.vae.decode((latent * std + mean).to(dtype)).sample.clamp(-1, 1)

    def stream_decoder(self):
        return _WanStreamDecoder(self)


class _WanStreamDecoder:
    """Drives Wan's causal decoder one latent frame at a time with a persistent feature
    cache of its own (AutoencoderKLWan.decode clears its cache on every call)."""

    def __init__(self, codec: WanVAECodec):
        self.codec = codec
        self.feat_map = [None] * codec.vae._cached_conv_counts["decoder"]
        self.first = True

    def decode_next(self, latent: torch.Tensor) -> torch.Tensor:
        vae = self.codec.vae
        mean, std = self.codec.stats(latent)
        x = vae.post_quant_conv((latent * std + mean).to(next(vae.parameters()).dtype))
        outs = []
        for i in range(x.shape[2]):
            outs.append(vae.decoder(x[:, :, i : i + 1], feat_cache=self.feat_map, feat_idx=[0], first_chunk=self.first))
            self.first = False
        return torch.cat(outs, dim=2).clamp(-1, 1)
