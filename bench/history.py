"""Recall with the true history: the first loop of a looping pan is the world's own frames
(written into the cache as sampling writes its blocks), the second loop is sampled; prints
JSON. The second loop films the same places, so a model that recalls draws what the
world's first loop showed. Sampling from block 0 is the same run with no world block, where
the model's own history can drift.

    OMP_NUM_THREADS=1 python -m bench.history --weights training/v13 [--config '{"guidance_scale": 3}']

Per prompt and seed: the mean pixels a frame of each named colour over the second loop,
world / world history / own history, and each block's counts; `world_history_blue_recall`
and the like: the share of a colour's world pixels the sampled second loop draws (1 =
recalled). `recall`: per prompt and colour, that share averaged over the seeds; its
smallest is `worst_recall` (one seed alone swings by a whole colour). `--no-prompt`: the
sampled blocks are denoised with a zeroed prompt (written with the true one, as training's
text dropout does), so what they draw of a colour comes from the history alone.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from bench.camera import PROMPTS
from packforcing.camera import CameraPath
from packforcing.decoding import Decoded
from packforcing.embedded import camera_model, metrics
from packforcing.embedded import panorama as world
from packforcing.sampler import PackForcingSampler

LOOP = world.LOOP_SECONDS  # blocks a loop takes


def colour_pixels(frames: np.ndarray, colours: list[str]) -> dict[str, float]:
    cmap = metrics.colour_map(frames)
    return {c: round(float((cmap == metrics.vocab.COLOURS.index(c)).sum(axis=(1, 2)).mean()), 1) for c in colours}


@torch.no_grad()
def run(backbone, config, prompt: str, seed: int, given: int, world_latent: torch.Tensor,
        prompted: bool = True) -> np.ndarray:
    """Frames of 2 loops; blocks < `given` are the world's latent, the rest sampled (with a
    zeroed prompt unless `prompted`)."""
    sampler = PackForcingSampler(backbone, config, seed=seed)
    path = CameraPath.parse(f"{world.spec_from_prompt(prompt).pan}:{2 * LOOP}")
    text = backbone.encode_prompt(prompt)
    denoise_text = text if prompted else torch.zeros_like(text)
    bf, frames = config.block_frames, []
    try:
        for i in range(2 * LOOP):
            sampler.move_camera(i, prompt, path)
            sampler.begin_block(i)
            x0 = world_latent[:, :, i * bf : (i + 1) * bf] if i < given else sampler.denoise_block(i, denoise_text)
            block = sampler.write_block(i, x0, text)
            decoded = Decoded(pixels=backbone.codec.decode(x0))
            sampler.memory.admit(block, x0, decoded, text)
            frames.append(decoded.frames())
    finally:
        sampler.memory.reset()
    return np.concatenate(frames)


def measure(backbone, prompt: str, seed: int, prompted: bool = True) -> dict:
    spec = world.spec_from_prompt(prompt, seed)
    colours = [c for c, _ in spec.objects]
    path = CameraPath.parse(f"{spec.pan}:{2 * LOOP}")
    truth = world.render(spec, world.positions(path.directions(2 * LOOP, 1.0)))
    pixels = torch.from_numpy(truth).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    latent = backbone.codec.encode(pixels)
    fpb = world.FPS
    second = slice(LOOP * fpb, None)
    row = {"prompt": prompt, "seed": seed, "world": colour_pixels(truth[second], colours)}
    for name, given in (("world_history", LOOP), ("own_history", 0)):
        frames = run(backbone, backbone.default_config, prompt, seed, given, latent, prompted)
        row[name] = colour_pixels(frames[second], colours)
        row[f"{name}_blocks"] = [list(colour_pixels(frames[b * fpb : (b + 1) * fpb], colours).values())
                                 for b in range(LOOP, 2 * LOOP)]
        for c in colours:
            row[f"{name}_{c}_recall"] = round(row[name][c] / row["world"][c], 3) if row["world"][c] else None
    return row


def mean_recall(rows: list[dict]) -> dict[str, float]:
    """'prompt: colour' -> the world-history recall averaged over the rows (seeds) of that prompt."""
    shares: dict[str, list[float]] = {}
    for r in rows:
        for c in r["world"]:
            value = r.get(f"world_history_{c}_recall")
            if value is not None:
                shares.setdefault(f"{r['prompt']}: {c}", []).append(value)
    return {k: round(sum(v) / len(v), 3) for k, v in shares.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", action="append", required=True, help="a camera-model folder (repeatable)")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3, help="layouts per prompt: seed, seed + 1, ...")
    ap.add_argument("--config", default="{}", help='sampling config fields to change, as JSON: {"guidance_scale": 3}')
    ap.add_argument("--no-prompt", action="store_true", help="denoise with a zeroed prompt: recall from history alone")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for weights in args.weights:
        backbone = camera_model.load(weights)
        backbone.default_config = backbone.default_config.replace(**json.loads(args.config))
        rows = [measure(backbone, p, args.seed + s, not args.no_prompt) for p in PROMPTS for s in range(args.seeds)]
        recall = mean_recall(rows)
        print(json.dumps({"weights": weights, "config": json.loads(args.config), "prompted": not args.no_prompt,
                          "recall": recall,
                          "worst_recall": min(recall.values(), default=None), "runs": rows}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
