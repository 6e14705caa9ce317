"""Does the camera model bind each colour word to its own shape? Prints JSON per weights.

    OMP_NUM_THREADS=1 python -m bench.binding --weights training/v13 [--weights runs/v13/ckpts/4000 ...]

Scenes of two objects of different colours and shapes ("a white square and a red
triangle"), prompts and seeds apart from training's. Two measures:

- sampled (the one that decides): the first 2 s of each scene, sampled with the model's
  sampling config (guidance and steps from --config). Every detected object with a colour
  and a shape counts as asked (a white square) or swapped (a red square: the other object's
  colour on this shape). pair_accuracy = asked / (asked + swapped): 1 when each colour
  word is read with its shape, 0.5 when the model draws colours and shapes independently.
  `world` gives the same count on the world's frames through the codec (the detector's
  ceiling).
- teacher-forced: the flow loss of the first block on the latent cells that show an
  object, under the true prompt, the colours swapped between the shapes, and two other
  colours; binding = (swapped - true) / (other - true). It is blind where sampling decides
  (at high noise nothing says which object stands where, so even a model that binds
  predicts the same mixture under both prompts), so it only shows binding read off
  half-visible shapes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random

import numpy as np
import torch

from bench.camera import generate
from packforcing.embedded import camera_model, metrics
from packforcing.embedded import panorama as world
from packforcing.embedded.camera_data import FRAMES_PER_BLOCK, object_cover
from packforcing.embedded.vocab import COLOURS, SHAPES, tokenize
from packforcing.pipeline import PackForcingPipeline
from packforcing.sampler import PackForcingSampler
from packforcing.video import to_uint8

SIGMAS = (0.5, 0.7, 0.9)
CONDITIONS = ("true", "swapped", "other")


def scenes(count: int, seed: int) -> list[tuple]:
    """`count` pairs ((colour, shape), (colour, shape)) with two colours and two shapes."""
    rng = random.Random(seed)
    pairs = [(a, b) for a, b in itertools.permutations(COLOURS, 2)]
    shapes = list(itertools.permutations(SHAPES, 2))
    return [tuple(zip(rng.choice(pairs), rng.choice(shapes), strict=True)) for _ in range(count)]


def prompts(objects: tuple, condition: str) -> str:
    (c1, s1), (c2, s2) = objects
    if condition == "swapped":
        c1, c2 = c2, c1
    elif condition == "other":
        c1, c2 = [c for c in COLOURS if c not in (c1, c2)][:2]
    return f"a {c1} {s1} and a {c2} {s2}, camera panning right"


def first_block(objects_list: list[tuple], seed: int, codec):
    """Pixels' latent, object cover and camera x of each scene's first block (panning right)."""
    rng = np.random.default_rng(seed)
    frames, xs = [], []
    for objects in objects_list:
        x = world.positions(["right"], float(rng.integers(world.PERIOD)), FRAMES_PER_BLOCK)
        frames.append(world.render(world.PanoramaSpec(objects, "right", int(rng.integers(2**31))), x))
        xs.append(x)
    pixels = torch.from_numpy(np.stack(frames)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    with torch.no_grad():
        latent = codec.encode(pixels)
    return latent, object_cover(pixels), torch.tensor(np.stack(xs), dtype=torch.float32)


@torch.no_grad()
def object_losses(backbone, objects_list: list[tuple], seed: int = 0) -> dict[str, float]:
    """Per condition, the mean flow loss over object cells, weighted by their object share."""
    latent, cover, xs = first_block(objects_list, seed, backbone.codec)
    gen = torch.Generator().manual_seed(seed)
    noises = [torch.randn(latent.shape, generator=gen) for _ in SIGMAS]
    cfg = backbone.default_config
    out = {}
    for condition in CONDITIONS:
        text = backbone.text_encoder(tokenize([prompts(o, condition) for o in objects_list]))
        total = 0.0
        for sigma, noise in zip(SIGMAS, noises, strict=True):
            sampler = PackForcingSampler(backbone, cfg, seed=seed)
            backbone.place.set_clip(xs)
            try:
                sampler.begin_block(0)
                v = sampler.forward((1 - sigma) * latent + sigma * noise, sigma * cfg.num_train_timesteps, text)
            finally:
                sampler.memory.reset()
            err = ((v.float() - (noise - latent)) ** 2).mean(1, keepdim=True)
            total += ((err * cover).sum() / cover.sum()).item() / len(SIGMAS)
        out[condition] = round(total, 4)
    gap = out["other"] - out["true"]
    out["binding"] = round((out["swapped"] - out["true"]) / gap, 3) if gap > 0 else None
    return out


def pair_counts(frames: np.ndarray, objects: tuple) -> tuple[int, int]:
    """(asked, swapped): detections with the asked (colour, shape) pairs, and with a colour
    on the other object's shape."""
    (c1, s1), (c2, s2) = objects
    asked, swapped = {(c1, s1), (c2, s2)}, {(c2, s1), (c1, s2)}
    found = [(c, s) for frame in metrics.detect(frames) for c, s, _, _ in frame if s is not None]
    return sum(f in asked for f in found), sum(f in swapped for f in found)


def sampled_binding(pipe, objects_list: list[tuple], seed: int, blocks: int = 2) -> dict:
    """pair_accuracy of the model's first `blocks` seconds and of the world's through the codec."""
    codec = pipe.backbone.codec
    counts = {"model": [0, 0], "world": [0, 0]}
    for i, objects in enumerate(objects_list):
        prompt = prompts(objects, "true")
        frames, _ = generate(pipe, prompt, blocks, seed + i, f"right:{blocks}")
        spec = world.spec_from_prompt(prompt, seed + i)
        pixels = torch.from_numpy(world.render(spec, world.positions(["right"] * blocks))).permute(3, 0, 1, 2)[None]
        with torch.no_grad():
            truth = to_uint8(codec.decode(codec.encode(pixels.float() / 127.5 - 1.0)))
        for name, f in (("model", frames), ("world", truth)):
            a, s = pair_counts(f, objects)
            counts[name][0] += a
            counts[name][1] += s
    out = {}
    for name, (a, s) in counts.items():
        out[f"{name}_asked"], out[f"{name}_swapped"] = a, s
        out[f"{name}_pair_accuracy"] = round(a / (a + s), 3) if a + s else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", action="append", required=True, help="a model folder (repeatable)")
    ap.add_argument("--scenes", type=int, default=48)
    ap.add_argument("--sampled", type=int, default=24, help="scenes sampled (0: the teacher-forced measure only)")
    ap.add_argument("--seed", type=int, default=2024, help="scenes and noise; apart from training's")
    ap.add_argument("--config", default="{}", help='sampling config fields to change, as JSON: {"guidance_scale": 3}')
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    objects_list = scenes(args.scenes, args.seed)
    for weights in args.weights:
        backbone = camera_model.load(weights)
        with open(f"{weights}/config.json") as f:
            steps = json.load(f).get("steps")
        row = {"weights": weights, "steps": steps, **object_losses(backbone, objects_list, args.seed)}
        if args.sampled:
            pipe = PackForcingPipeline(backbone)
            backbone.default_config = pipe.default_config.replace(**json.loads(args.config))
            row |= sampled_binding(pipe, objects_list[: args.sampled], args.seed)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
