"""Helpers only the tests use: a key shift in time built from the cache's own rotation,
the original Wan checkpoint's key shapes (synthetic checkpoints without the real file),
and PSNR."""

import math

import torch

from packforcing.rope import rotate_in_time, temporal_rotation


def shift_keys_in_time(keys: torch.Tensor, delta: float) -> torch.Tensor:
    """Rotate only the temporal channel pairs of rotated keys (B, S, H, D) by delta frames."""
    if delta == 0:
        return keys
    return rotate_in_time(keys, *temporal_rotation(torch.full((keys.shape[1],), float(delta)), keys.shape[-1]))


def original_key_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the original Wan state dict (with `model.`) for a T2V config:
    what Self-Forcing's trainer writes. Used to test the conversion without the file."""
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    out_dim = config["out_channels"] * math.prod(config["patch_size"])
    shapes = {
        "patch_embedding.weight": (dim, config["in_channels"], *config["patch_size"]),
        "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, config["text_dim"]),
        "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim),
        "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, config["freq_dim"]),
        "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim),
        "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim),
        "time_projection.1.bias": (6 * dim,),
        "head.head.weight": (out_dim, dim),
        "head.head.bias": (out_dim,),
        "head.modulation": (1, 2, dim),
    }
    for i in range(config["num_layers"]):
        b = f"blocks.{i}."
        shapes[b + "modulation"] = (1, 6, dim)
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                shapes[f"{b}{attn}.{proj}.weight"] = (dim, dim)
                shapes[f"{b}{attn}.{proj}.bias"] = (dim,)
            shapes[f"{b}{attn}.norm_q.weight"] = (dim,)
            shapes[f"{b}{attn}.norm_k.weight"] = (dim,)
        shapes[b + "norm3.weight"] = (dim,)
        shapes[b + "norm3.bias"] = (dim,)
        shapes[b + "ffn.0.weight"] = (config["ffn_dim"], dim)
        shapes[b + "ffn.0.bias"] = (config["ffn_dim"],)
        shapes[b + "ffn.2.weight"] = (dim, config["ffn_dim"])
        shapes[b + "ffn.2.bias"] = (dim,)
    return {"model." + k: v for k, v in shapes.items()}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors in [-1, 1]."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)
