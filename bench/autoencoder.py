"""Reconstruction of held-out world clips: the fixed DCT codec against the learned autoencoder.

    python -m bench.autoencoder [--clips 60] [--seconds 12] [--weights assets/embedded/autoencoder] [--png FILE]

Both codecs round-trip the same clips in one run: v11 world clips of random objects,
layouts and per-block camera directions, drawn from a generator no training uses
(seed 20261207; training draws from seeds 0..steps). PSNR on uint8 frames, per clip, then
averaged. Also the encode + decode time of a 16-s clip on one thread and the weights' size.
Prints JSON; --png saves ground truth / DCT / autoencoder rows side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import numpy as np
import torch

from packforcing.embedded import panorama as world
from packforcing.embedded import vocab
from packforcing.embedded.autoencoder import AE_DIR, load_codec
from packforcing.embedded.camera_data import random_objects
from packforcing.embedded.codec import WorldCodec
from packforcing.video import to_uint8

HELD_OUT_SEED = 20261207


def held_out_clip(rng: random.Random, seconds: int) -> tuple[np.ndarray, list[str]]:
    """uint8 (T, 64, 64, 3) and the camera direction of each 1-s block."""
    spec = world.PanoramaSpec(random_objects(rng), rng.choice(vocab.PANS), rng.randrange(2**31))
    path = [rng.choice(("left", "still", "right")) for _ in range(seconds)]
    xs = world.positions(path, float(rng.randrange(world.PERIOD)), world.FPS)
    return world.render(spec, xs), path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def round_trip(codec, frames: np.ndarray) -> np.ndarray:
    pixels = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        return to_uint8(codec.decode(codec.encode(pixels)))[: len(frames)]


def seconds_per_clip(codec, frames: int = 256, repeats: int = 3) -> float:
    pixels = torch.rand(1, 3, frames, world.VIEW, world.VIEW) * 2 - 1
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            codec.decode(codec.encode(pixels))
            best = min(best, time.perf_counter() - t0)
    return best


def save_png(path: str, rows: list[np.ndarray], scale: int = 3) -> None:
    from PIL import Image

    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def summary(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--weights", default=AE_DIR)
    parser.add_argument("--png", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    codecs = {"dct": WorldCodec(), "ae": load_codec(args.weights)}
    rng = random.Random(HELD_OUT_SEED)
    scores = {name: [] for name in codecs}
    moving = {name: [] for name in codecs}
    rows = []
    for i in range(args.clips):
        frames, path = held_out_clip(rng, args.seconds)
        outs = {name: round_trip(c, frames) for name, c in codecs.items()}
        for name, out in outs.items():
            scores[name].append(psnr(frames, out))
            moving[name] += [
                psnr(frames[16 * b : 16 * b + 16], out[16 * b : 16 * b + 16])
                for b, d in enumerate(path)
                if d != "still"
            ]
        if i < 3:  # frames 0, 5, 10, 15 of the first moving second
            b = next((b for b, d in enumerate(path) if d != "still"), 0)
            pick = [16 * b + k for k in (0, 5, 10, 15)]
            rows += [frames[pick], outs["dct"][pick], outs["ae"][pick]]
    if args.png:
        save_png(args.png, rows)
    weights = os.path.join(args.weights, "autoencoder.safetensors")
    print(json.dumps({
        "clips": args.clips,
        "seconds": args.seconds,
        "held_out_seed": HELD_OUT_SEED,
        "psnr_db": {name: summary(v) for name, v in scores.items()},
        "psnr_moving_blocks_db": {name: summary(v) for name, v in moving.items()},
        "encode_decode_16s_clip_s_1_thread": {name: round(seconds_per_clip(c), 4) for name, c in codecs.items()},
        "ae_weights_bytes": os.path.getsize(weights),
        "ae_parameters": sum(p.numel() for p in codecs["ae"].model.parameters()),
        "png_rows": "per clip: ground truth / DCT codec / autoencoder" if args.png else None,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
