"""Self-Forcing's causal generator (`self_forcing_dmd.pt`) -> diffusers WanTransformer3DModel.

The checkpoint is a dict written by Self-Forcing's trainer: `generator`, `generator_ema`
and maybe `critic`, each a state dict whose keys are `model.<original Wan name>`. The
official inference loads `generator_ema`. Conversion is a pure rename (no reshapes,
nothing left over), the same table as diffusers' own Wan conversion script. Nothing is
unpickled: `torch.load(weights_only=True)` or safetensors only.
"""

from __future__ import annotations

import hashlib
import os
import re

import torch
from torch import nn

SELF_FORCING_REPO = "gdhe17/Self-Forcing"
SELF_FORCING_FILE = "checkpoints/self_forcing_dmd.pt"
CONVERTED_SUFFIX = ".diffusers.safetensors"

WAN_1_3B_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)

# Applied in order to every key (after stripping `model.`). norm2 and norm3 swap places:
# the original's cross-attention norm is norm3, diffusers' is norm2.
RENAMES = (
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.modulation", "scale_shift_table"),
    ("head.head", "proj_out"),
    ("modulation", "scale_shift_table"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("norm2", "__norm_placeholder__"),
    ("norm3", "norm2"),
    ("__norm_placeholder__", "norm3"),
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
)
GENERATOR_KEYS = ("generator_ema", "generator")  # preference order, as the official inference


class CheckpointError(ValueError):
    """A checkpoint that is not a Self-Forcing / Wan generator for the requested config."""


def convert_key(original: str) -> str:
    key = original[len("model.") :] if original.startswith("model.") else original
    for old, new in RENAMES:
        key = key.replace(old, new)
    return key


def convert_self_forcing_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan names (with or without `model.`) -> diffusers names. Tensors untouched."""
    out = {}
    for key, value in state.items():
        new = convert_key(key)
        if new in out:
            raise CheckpointError(f"two checkpoint keys map to {new!r} (second: {key!r})")
        out[new] = value
    return out


def select_generator(checkpoint: dict, source: str = "checkpoint") -> tuple[str | None, dict[str, torch.Tensor]]:
    """(which entry, state dict): generator_ema if present, else generator, else the dict itself
    when it already is a state dict of tensors."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{source}: expected a dict, got {type(checkpoint).__name__}")
    for name in GENERATOR_KEYS:
        if name in checkpoint:
            if not isinstance(checkpoint[name], dict):
                raise CheckpointError(f"{source}: entry {name!r} is a {type(checkpoint[name]).__name__}, not a state "
                                      "dict")
            return name, checkpoint[name]
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return None, checkpoint
    raise CheckpointError(f"{source}: no generator weights; expected one of {list(GENERATOR_KEYS)} or a state dict, "
                          f"found keys {sorted(checkpoint)[:8]}")


def expected_shapes(config: dict) -> dict[str, torch.Size]:
    """Parameter names and shapes of a WanTransformer3DModel with this config (meta device, no memory)."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    return {k: v.shape for k, v in model.state_dict().items()}


def _natural(key: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def check_state_dict(state: dict[str, torch.Tensor], config: dict, source: str = "checkpoint") -> None:
    """Raise CheckpointError naming every missing, unexpected and mis-shaped key."""
    want = expected_shapes(config)
    missing = sorted(set(want) - set(state), key=_natural)
    unexpected = sorted(set(state) - set(want), key=_natural)
    wrong = [f"{k}: {tuple(state[k].shape)} (expected {tuple(want[k])})"
             for k in sorted(set(want) & set(state), key=_natural) if state[k].shape != want[k]]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                more = f" and {len(items) - 10} more" if len(items) > 10 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:10])}{more}")
        raise CheckpointError(f"{source} does not match the Wan transformer config ({'; '.join(parts)})")


class Float64Timesteps(nn.Module):
    """Wan's sinusoidal timestep embedding in float64, [cos, sin] order. diffusers computes it
    in float32, which rounds differently after the bf16 cast at t = 1000, 937.5, 833.3."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        position = timesteps.to(torch.float64)
        freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=position.device) / half)
        angles = torch.outer(position, freqs)
        return torch.cat([angles.cos(), angles.sin()], dim=1)


def apply_original_numerics(model: nn.Module) -> nn.Module:
    """Match the original's numerics where diffusers differs: the float64 timestep embedding.
    RMSNorm (fp32, cast back before the weight) and the fp32 LayerNorms already agree."""
    model.condition_embedder.timesteps_proj = Float64Timesteps(model.config.freq_dim)
    return model


def _load_file(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    _, state = select_generator(checkpoint, path)
    return state


def _resolve(source: str) -> str:
    """A file, a directory holding checkpoints/self_forcing_dmd.pt, or a Hub repo id."""
    if os.path.isfile(source):
        return source
    if os.path.isdir(source):
        for candidate in (SELF_FORCING_FILE, os.path.basename(SELF_FORCING_FILE)):
            path = os.path.join(source, candidate)
            if os.path.isfile(path):
                return path
        raise CheckpointError(f"{source} is a directory without {SELF_FORCING_FILE}")
    if source.count("/") == 1 and not source.startswith((".", "/")):
        from huggingface_hub import hf_hub_download

        return hf_hub_download(source, SELF_FORCING_FILE)
    raise CheckpointError(f"{source!r} is not a file, a directory or a Hugging Face repo id (like "
                          f"{SELF_FORCING_REPO!r})")


def converted_cache_path(path: str, cache_dir: str | None = None) -> str:
    """Where the converted safetensors of `path` are kept: named after the file and its size
    and mtime, so a replaced checkpoint is converted again."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "packforcing")
    cache_dir = cache_dir or os.environ.get("PACKFORCING_CACHE") or default
    stat = os.stat(path)
    tag = hashlib.sha1(f"{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    stem = os.path.basename(path).split(".")[0]
    return os.path.join(cache_dir, f"{stem}-{tag}{CONVERTED_SUFFIX}")


def load_converted_state_dict(source: str, config: dict | None = None, cache_dir: str | None = None,
                              save: bool = True) -> dict[str, torch.Tensor]:
    """Converted, checked diffusers state dict of `source`; converted once, then read from the cache."""
    config = config or WAN_1_3B_CONFIG
    path = _resolve(source)
    if path.endswith(CONVERTED_SUFFIX):
        state = _load_file(path)
        check_state_dict(state, config, path)
        return state
    cached = converted_cache_path(path, cache_dir)
    if os.path.isfile(cached):
        state = _load_file(cached)
        check_state_dict(state, config, cached)
        return state
    raw = _load_file(path)
    if not any(k.startswith("model.") for k in raw) and any(k.startswith("condition_embedder.") for k in raw):
        state = raw  # already diffusers names
    else:
        state = convert_self_forcing_state_dict(raw)
    check_state_dict(state, config, path)
    if save:
        from safetensors.torch import save_file

        os.makedirs(os.path.dirname(cached), exist_ok=True)
        tmp = cached + ".partial"
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata={"source": os.path.basename(path)})
        os.replace(tmp, cached)  # a stop mid-write never leaves a truncated cache behind
    return state


def load_self_forcing_transformer(source: str, dtype=torch.bfloat16, device="cuda", config: dict | None = None,
                                  cache_dir: str | None = None):
    """The causal generator as a diffusers WanTransformer3DModel with the original's numerics.

    Built on the meta device and filled with `assign=True`, so the 1.3B weights are held
    once (no random init, no second copy)."""
    from diffusers import WanTransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    config = config or WAN_1_3B_CONFIG
    state = load_converted_state_dict(source, config, cache_dir)
    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    # RoPE tables are non-persistent buffers: rebuild them for real
    model.rope = WanRotaryPosEmbed(config["attention_head_dim"], config["patch_size"], config["rope_max_seq_len"])
    apply_original_numerics(model)
    return model.to(device).eval().requires_grad_(False)
