"""Frames: decoder pixels to uint8, and uint8 frames to mp4 with the ffmpeg binary that
imageio-ffmpeg ships."""

import numpy as np
import torch


def to_uint8(pixels) -> np.ndarray:
    """Decoder pixels (1, 3, T, H, W) or (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    x = torch.as_tensor(pixels).detach().float().cpu()
    if x.dim() == 5:
        if x.shape[0] != 1:
            raise ValueError(f"expected batch size 1, got {tuple(x.shape)}")
        x = x[0]
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def write_mp4(frames: np.ndarray, path: str, fps: int, scale: int = 1) -> None:
    """(T, H, W, 3) uint8 -> H.264 .mp4 or, for a path ending in .ts, an MPEG-TS segment
    (what a streaming HLS player wants); nearest-neighbour upscaled by `scale`."""
    import imageio_ffmpeg

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        path, (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
        output_params=["-crf", "18", "-preset", "veryfast"] + (["-f", "mpegts"] if path.endswith(".ts") else []),
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
