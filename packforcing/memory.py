"""Token and byte arithmetic of the cache. Pure Python: no torch, reproduces the paper.

Accounting follows the paper's efficiency table: the cache holds sink + mid bank +
recent blocks; the block being generated is computed on the fly and written into the
cache only as it becomes the recent block (window = sink + recent = 18,720 tokens =
3.45 GB at 832x480; FIFO adds 16 x 182 tokens = 4.0 GB).
"""

import math
from dataclasses import dataclass

from .config import COMPRESSING_POLICIES, POLICIES, PackForcingConfig, check_number

# What the arithmetic accepts: up to a day of 8K video (beyond that it is not a question
# about this method, and float seconds lose whole frames).
MAX_SECONDS = 86_400
MAX_SIDE = 8192
MAX_FPS = 240


@dataclass(frozen=True)
class ModelDims:
    num_layers: int = 30
    inner_dim: int = 1536  # heads x head_dim
    dtype_bytes: int = 2  # bf16
    patch: tuple[int, int, int] = (1, 2, 2)
    vae_spatial: int = 8
    vae_temporal: int = 4

    @property
    def bytes_per_token(self) -> int:
        """K and V, every layer."""
        return 2 * self.num_layers * self.inner_dim * self.dtype_bytes


WAN_1_3B = ModelDims()
# The HR compressor's strided convs (time, height, width): they fix the compressed grid,
# and the LR branch is cropped to the same grid (packforcing.compression).
HR_STRIDES = ((2, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2))
# the paper's video: Wan2.1-1.3B at 832x480, 16 FPS, 120 s
PAPER_WIDTH, PAPER_HEIGHT, PAPER_FPS, PAPER_SECONDS = 832, 480, 16, 120.0


def tokens_per_latent_frame(width: int, height: int, dims: ModelDims = WAN_1_3B) -> int:
    _, ph, pw = dims.patch
    return (height // dims.vae_spatial // ph) * (width // dims.vae_spatial // pw)


def compressed_grid(block_frames: int, latent_h: int, latent_w: int) -> tuple[int, int, int]:
    """(F, H, W) token grid of one compressed block: the HR branch's output shape."""
    f, h, w = block_frames, latent_h, latent_w
    for st, sh, sw in HR_STRIDES:
        f, h, w = f // st, h // sh, w // sw
    return f, h, w


def compressed_tokens_per_block(width: int, height: int, config: PackForcingConfig, dims: ModelDims = WAN_1_3B) -> int:
    """Both branches land on (block_frames/2, h/8, w/8) tokens: HR by three stride-2
    spatial convs on the latent, LR by 4x pixel pooling, the VAE's 8x and the 2x patch.
    A 1-frame block yields none (the HR branch's stride-2 time conv), as the sampler finds."""
    return math.prod(compressed_grid(config.block_frames, height // dims.vae_spatial, width // dims.vae_spatial))


def latent_frames_for(seconds: float, fps: int, dims: ModelDims = WAN_1_3B) -> int:
    return int(round(seconds * fps / dims.vae_temporal))


def memory_table(
    seconds: float,
    width: int = PAPER_WIDTH,
    height: int = PAPER_HEIGHT,
    fps: int = PAPER_FPS,
    config: PackForcingConfig = PackForcingConfig(),
    dims: ModelDims = WAN_1_3B,
) -> dict:
    seconds = _check_positive("seconds", seconds, MAX_SECONDS)
    fps = int(check_number("fps", fps, 1, MAX_FPS, integer=True))
    width, height = check_frame_size(width, height, dims)
    per_frame = tokens_per_latent_frame(width, height, dims)
    per_block = per_frame * config.block_frames
    compressed = compressed_tokens_per_block(width, height, config, dims)
    latent_frames = latent_frames_for(seconds, fps, dims)
    num_blocks = -(-latent_frames // config.block_frames)
    sink_tokens = config.sink_frames * per_frame
    recent_tokens = config.recent_blocks * per_block
    bpt = dims.bytes_per_token
    context = sink_tokens + config.top_k * compressed + recent_tokens + per_block
    held = {p: _held_tokens(p, num_blocks, per_block, compressed, config) for p in POLICIES}
    return {
        "seconds": seconds,
        "width": width,
        "height": height,
        "fps": fps,
        "tokens_per_latent_frame": per_frame,
        "tokens_per_block": per_block,
        "compressed_tokens_per_block": compressed,
        "compression_ratio": per_block / compressed if compressed else None,
        "latent_frames": latent_frames,
        "num_blocks": num_blocks,
        "sink_tokens": sink_tokens,
        "recent_tokens": recent_tokens,
        "context_tokens": context,
        "full_cache_tokens": latent_frames * per_frame,
        "full_cache_bytes": latent_frames * per_frame * bpt,
        "packforcing_tokens": held[config.policy],
        "packforcing_kv_bytes": held[config.policy] * bpt,
        "bytes_per_token": bpt,
        "kv_bytes_by_policy": {p: t * bpt for p, t in held.items()},
    }


def _held_tokens(policy: str, blocks_done: int, per_block: int, compressed: int, config: PackForcingConfig) -> int:
    """Tokens the cache holds once `blocks_done` blocks have been generated."""
    sink_blocks = min(config.sink_blocks, blocks_done)
    recent_blocks = min(config.recent_blocks, blocks_done - sink_blocks)
    past = blocks_done - sink_blocks - recent_blocks  # blocks that have left the recent window
    full_res = (sink_blocks + recent_blocks) * per_block
    if policy == "full":
        return full_res + past * per_block
    if policy == "window":
        return full_res
    capacity = config.replace(policy=policy).bank_capacity if policy in COMPRESSING_POLICIES else 0
    return full_res + min(past, capacity) * compressed


def kv_curve(
    seconds: float,
    width: int = PAPER_WIDTH,
    height: int = PAPER_HEIGHT,
    fps: int = PAPER_FPS,
    config: PackForcingConfig = PackForcingConfig(),
    dims: ModelDims = WAN_1_3B,
) -> list[dict]:
    """Bytes held after each block, for every policy: the memory panel's projection."""
    table = memory_table(seconds, width, height, fps, config, dims)
    per_block, compressed = table["tokens_per_block"], table["compressed_tokens_per_block"]
    seconds_per_block = config.block_frames * dims.vae_temporal / fps
    rows = []
    for block in range(table["num_blocks"]):
        row = {"block": block, "video_seconds": (block + 1) * seconds_per_block}
        for policy in POLICIES:
            row[policy] = _held_tokens(policy, block + 1, per_block, compressed, config) * dims.bytes_per_token
        rows.append(row)
    return rows


def check_frame_size(width, height, dims: ModelDims = WAN_1_3B) -> tuple[int, int]:
    """(width, height) as ints, or a ValueError: each side must be a whole number of
    VAE cells times patches (16 pixels for Wan), else the arithmetic would silently
    floor it to a smaller frame."""
    multiple = dims.vae_spatial * max(dims.patch[1:])
    sides = []
    for name, value in (("width", width), ("height", height)):
        value = check_number(name, value, multiple, MAX_SIDE, integer=True)
        if value % multiple:
            lower = value // multiple * multiple
            raise ValueError(
                f"{name}={value} is not a multiple of {multiple} (the VAE's {dims.vae_spatial} x the patch's "
                f"{max(dims.patch[1:])}); "
                f"try {lower} or {lower + multiple}"
            )
        sides.append(value)
    return sides[0], sides[1]


def _check_positive(name, value, high) -> float:
    value = check_number(name, value, 0, high)
    if value == 0:
        raise ValueError(f"{name}=0 is out of range; allowed more than 0, up to {high:,}")
    return value
