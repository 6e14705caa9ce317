"""Writing frames to mp4 with the ffmpeg binary that imageio-ffmpeg ships."""

import numpy as np


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
