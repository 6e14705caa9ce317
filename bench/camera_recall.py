"""Does the v11 model read the mid bank? Teacher-forced flow loss on the blocks of an
out-and-back clip that revisit places only the mid bank holds; prints JSON.

    OMP_NUM_THREADS=1 python -m bench.camera_recall --weights runs/v11 [--weights runs/v11-ckpts/300 ...]

Same clips, noise and noise level (sigma 0.9, where sampling decides a layout) under:
  dynamic  the model's own selection
  oracle   the selection must include the block that filmed the place
  window   no mid bank at all
  swapped  the blocks that filmed those places hold another clip's layout (same camera)
A model that recalls has dynamic ~ oracle < window ~ swapped. `--no-prompt`: the denoising
passes see a zeroed prompt (the history is written with the true one), so the gap is what
the history alone tells the model.
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from packforcing.attention import SelectionHook
from packforcing.decoding import Decoded
from packforcing.embedded import camera_model
from packforcing.embedded.camera_data import Clips, is_mid_revisit, make_clips, revisit_sources
from packforcing.embedded.panorama import positions
from packforcing.embedded.vocab import tokenize
from packforcing.sampler import PackForcingSampler

PATH = ["right"] * 6 + ["left"] * 6


def clips_for(seed: int, batch: int, codec) -> Clips:
    rng = random.Random(seed)
    clips = make_clips(rng, batch, len(PATH), codec)
    while [r for r in clips.sources] != revisit_sources(positions(PATH)):  # redraw until the path is out-and-back
        clips = make_clips(rng, batch, len(PATH), codec)
    return clips


@torch.no_grad()
def revisit_loss(backbone, clips: Clips, condition: str, sigma: float = 0.9, seed: int = 0,
                 policy: str = "dynamic", prompted: bool = True, watch=None) -> float:
    """watch: called as watch(sampler, block, row) before each mid revisit's denoising pass
    and watch(None, block, row) after it (bench/attention_mass.py records in between)."""
    cfg = backbone.default_config.replace(policy="window" if condition == "window" else policy)
    sampler = PackForcingSampler(backbone, cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    text = backbone.text_encoder(tokenize(clips.prompts[0]))
    denoise_text = text if prompted else torch.zeros_like(text)
    backbone.place.set_clip(clips.xs)
    bf, losses = cfg.block_frames, []
    latent, pixels = clips.latent.clone(), clips.pixels.clone()
    if condition == "swapped":  # the source blocks' history comes from the next clip (another layout)
        for m in {m for row in clips.sources if is_mid_revisit(row) for m in row["mid"]}:
            latent[:, :, m * bf : (m + 1) * bf] = clips.latent[:, :, m * bf : (m + 1) * bf].roll(1, 0)
            pixels[:, :, m * 16 : (m + 1) * 16] = clips.pixels[:, :, m * 16 : (m + 1) * 16].roll(1, 0)
    try:
        for c, row in enumerate(clips.sources):
            mid = is_mid_revisit(row)
            x0 = (clips.latent if mid else latent)[:, :, c * bf : (c + 1) * bf]
            sampler.begin_block(c, hook=SelectionHook(row["mid"] if condition == "oracle" and mid else []))
            noise = torch.randn(x0.shape, generator=gen)
            if mid and watch is not None:
                watch(sampler, c, row)
            v = sampler.forward((1 - sigma) * x0 + sigma * noise, sigma * cfg.num_train_timesteps, denoise_text)
            if mid and watch is not None:
                watch(None, c, row)
            if mid:
                losses.append(((v - (noise - x0)) ** 2).mean().item())
            hist = latent[:, :, c * bf : (c + 1) * bf]
            sampler.memory.admit(sampler.write_block(c, hist, text), hist,
                                 Decoded(pixels=pixels[:, :, c * 16 : (c + 1) * 16]), text)
    finally:
        sampler.memory.reset()
    return sum(losses) / len(losses)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", action="append", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--policy", default="dynamic", help="the policy of the trained model's mid bank (full: kept whole)")
    ap.add_argument("--no-prompt", action="store_true", help="denoise with a zeroed prompt: the history alone")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = []
    for weights in args.weights:
        backbone = camera_model.load(weights)
        clips = clips_for(1234, args.batch, backbone.codec)
        with open(f"{weights}/config.json") as f:
            steps = json.load(f).get("steps")
        row = {"weights": weights, "steps": steps, "prompted": not args.no_prompt}
        row |= {c: round(revisit_loss(backbone, clips, c, policy=args.policy, prompted=not args.no_prompt), 4)
                for c in ("dynamic", "oracle", "window", "swapped")}
        out.append(row)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
