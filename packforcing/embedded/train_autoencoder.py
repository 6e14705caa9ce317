"""Train the world autoencoder (autoencoder.py) from a recipe, nanoGPT style:

    python -m packforcing.embedded.train_autoencoder \
        --recipe packforcing/embedded/recipes/autoencoder.json --out runs/ae [--minutes 4]

Training data: 4-frame groups of the v11 world rendered on the fly (random objects and
layouts, camera panning left, right or still from a random place). Loss: L1 + L2 on
pixels plus L1 on horizontal / vertical pixel differences (object edges are what the
eye reads). The decoder also sees slightly noised latents, since a generator's latents
are never exact. `--minutes` bounds one run; running again resumes from OUT/state.pt
(loads with weights_only=True). When `steps` are done the per-channel latent stats are
measured and frozen, and OUT/autoencoder.safetensors + OUT/config.json are written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time

import numpy as np
import torch

from . import panorama as world
from . import vocab
from .autoencoder import TEMPORAL, AutoencoderCodec, WorldAutoencoder, save_codec, to_groups
from .camera_data import random_objects

DIRECTIONS = ("left", "still", "right")


@dataclasses.dataclass
class AERecipe:
    steps: int = 1200
    batch: int = 32  # 4-frame groups per step
    groups_per_world: int = 4  # groups cut from each rendered panorama
    lr: float = 2e-3
    warmup: int = 50
    widths: tuple = (32, 64, 96)
    edge_weight: float = 0.5
    latent_noise: float = 0.1  # x each channel's batch std, added to the decoder's input
    stats_clips: int = 200  # 16-frame clips measured for the frozen latent stats
    checkpoint_minutes: float = 2.0
    threads: int = 1
    seed: int = 0

    @classmethod
    def load(cls, path: str) -> AERecipe:
        with open(path) as f:
            raw = json.load(f)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown recipe fields {unknown}; allowed: {sorted(known)}")
        if "widths" in raw:
            raw["widths"] = tuple(raw["widths"])
        return cls(**raw)


def world_groups(rng: random.Random, count: int, per_world: int = 4, frames: int = TEMPORAL) -> torch.Tensor:
    """(count, 3, frames, 64, 64) in [-1, 1]: clips of random worlds, each seen from
    `per_world` random places, the camera moving one random way per clip."""
    clips = []
    while len(clips) < count:
        spec = world.PanoramaSpec(random_objects(rng), rng.choice(vocab.PANS), rng.randrange(2**31))
        for _ in range(min(per_world, count - len(clips))):
            sign = world.DIRECTION_SIGN[rng.choice(DIRECTIONS)]
            xs = rng.randrange(world.PERIOD) + world.STEP * sign * np.arange(frames)
            clips.append(world.render(spec, xs))
    pixels = torch.from_numpy(np.stack(clips)).float() / 127.5 - 1.0
    return pixels.permute(0, 4, 1, 2, 3).contiguous()


def pixel_loss(out: torch.Tensor, target: torch.Tensor, edge_weight: float) -> torch.Tensor:
    d = out - target
    loss = d.abs().mean() + d.pow(2).mean()
    if edge_weight:
        dx = (out[..., 1:] - out[..., :-1]) - (target[..., 1:] - target[..., :-1])
        dy = (out[..., 1:, :] - out[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
        loss = loss + edge_weight * (dx.abs().mean() + dy.abs().mean())
    return loss


def learning_rate(recipe: AERecipe, step: int) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_step(model, opt, recipe: AERecipe, step: int) -> dict:
    # a fresh generator per step: a resumed run draws the same data as an unbroken one
    rng = random.Random(recipe.seed * 1_000_003 + step)
    torch.manual_seed(recipe.seed * 1_000_003 + step)
    groups = to_groups(world_groups(rng, recipe.batch, recipe.groups_per_world))
    for g in opt.param_groups:
        g["lr"] = learning_rate(recipe, step)
    z = model.encoder(groups)
    if recipe.latent_noise:
        z = z + recipe.latent_noise * z.detach().std(dim=(0, 2, 3), keepdim=True) * torch.randn_like(z)
    out = model.decoder(z)
    loss = pixel_loss(out, groups, recipe.edge_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    mse = (out.detach().clamp(-1, 1) - groups).pow(2).mean().item()
    return {"step": step, "loss": round(loss.item(), 5), "psnr": round(10 * math.log10(4.0 / max(mse, 1e-12)), 2)}


@torch.no_grad()
def latent_stats(model: WorldAutoencoder, recipe: AERecipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean / std of the raw latent over `stats_clips` 16-frame clips."""
    codec = AutoencoderCodec(model)
    rng = random.Random(recipe.seed * 1_000_003 - 1)  # no training step uses this stream
    z = torch.cat([codec.raw_encode(world_groups(rng, 20, 1, 16)) for _ in range(max(1, recipe.stats_clips // 20))])
    z = z.transpose(0, 1).reshape(z.shape[1], -1)
    return z.mean(1), z.std(1)


def save_state(path: str, model, opt, step: int) -> None:
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
    os.replace(tmp, path)  # a run stopped mid-save keeps its last whole checkpoint


def run(recipe: AERecipe, out: str, minutes: float | None) -> dict:
    torch.set_num_threads(recipe.threads)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(recipe.seed)
    model = WorldAutoencoder(recipe.widths)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    state_path, step = os.path.join(out, "state.pt"), 0
    if os.path.exists(state_path):
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
    start = last_save = time.time()
    row = {}
    with open(os.path.join(out, "log.jsonl"), "a") as log:
        while step < recipe.steps and (minutes is None or time.time() - start < 60 * minutes):
            row = train_step(model.train(), opt, recipe, step)
            step += 1
            if step % 25 == 0:
                log.write(json.dumps({**row, "seconds": round(time.time() - start, 1)}) + "\n")
                log.flush()
            if time.time() - last_save > 60 * recipe.checkpoint_minutes:
                save_state(state_path, model, opt, step)
                last_save = time.time()
    save_state(state_path, model, opt, step)
    if step >= recipe.steps:
        mean, std = latent_stats(model.eval(), recipe)
        save_codec(model, mean, std, out, {"steps": step, "recipe": dataclasses.asdict(recipe)})
    return {"step": step, "of": recipe.steps, "last": row, "done": step >= recipe.steps}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=None, help="stop this run after this long (resume later)")
    args = parser.parse_args(argv)
    print(json.dumps(run(AERecipe.load(args.recipe), args.out, args.minutes)))


if __name__ == "__main__":
    main()
