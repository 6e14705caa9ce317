"""How noisy are the camera model's frames, and how well does it denoise at each noise level?
Prints one JSON line per checkpoint.

    OMP_NUM_THREADS=1 python -m bench.speckle --weights runs/v12/ckpts/3515 [--weights ...]

speckle: mean |difference| between horizontally neighbouring pixels (0-255) of a 12-s
  sample per prompt (seed 1000, camera right); the world's own frames give about 1.5.
outside: a 4-s sample's latent (its frames encoded again), cut into the transformer's
  patches; the share of its energy outside the span of the output layer's columns (what no
  output of the model can write), and the speckle of that part alone. A velocity model's
  sample keeps its starting noise there.
sigma_loss: teacher-forced flow loss of every block of the same 8 clips of 16 blocks,
  with the noise level fixed for all of them (every block trained, no forced source).
"""

from __future__ import annotations

import argparse
import json
import random
from unittest import mock

import numpy as np
import torch
from einops import rearrange

from packforcing.embedded import camera_model, teacher
from packforcing.embedded.camera_data import make_clips
from packforcing.embedded.train import encode_texts
from packforcing.events import Frames
from packforcing.pipeline import PackForcingPipeline
from packforcing.sampler import PackForcingSampler

PROMPTS = ["a red circle and a blue square", "a green triangle and a yellow circle",
           "a white square and a red triangle"]
SIGMAS = (0.05, 0.15, 0.3, 0.5, 0.7, 0.9)


def sample(backbone, prompt: str, seconds: int) -> np.ndarray:
    pipe = PackForcingPipeline(backbone)
    return np.concatenate([e.frames for e in pipe.stream(prompt, seconds=seconds, seed=1000, config=pipe.default_config,
                                                          camera=f"right:{seconds}") if isinstance(e, Frames)])


def hdiff(pixels) -> float:
    """Mean |difference| between horizontally neighbouring pixels, 0-255 frames (T, H, W, 3)."""
    return float(np.abs(np.diff(np.asarray(pixels, dtype=float), axis=2)).mean())


def speckle(backbone) -> float:
    return round(float(np.mean([hdiff(sample(backbone, prompt, 12)) for prompt in PROMPTS])), 2)


def outside_part(backbone, latent: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The part of `latent` (B, C, F, H, W) outside the span of the output layer's columns,
    patch by patch, and its share of the energy."""
    _, ph, pw = backbone.patch
    tokens = rearrange(latent, "b c f (h ph) (w pw) -> b f h w (ph pw c)", ph=ph, pw=pw)  # proj_out's order
    span, _ = torch.linalg.qr(backbone.transformer.proj_out.weight.detach().float())
    part = tokens - tokens @ span @ span.T
    share = float(part.square().sum() / tokens.square().sum())
    return rearrange(part, "b f h w (ph pw c) -> b c f (h ph) (w pw)", ph=ph, pw=pw, c=latent.shape[1]), share


def outside(backbone) -> dict[str, float]:
    video = torch.from_numpy(sample(backbone, PROMPTS[0], 4)).float()
    part, share = outside_part(backbone, backbone.codec.encode(rearrange(video / 127.5 - 1, "t h w c -> 1 c t h w")))
    pixels = backbone.codec.decode(part)
    return {"energy_share": round(share, 3),
            "speckle": round(hdiff(rearrange((pixels[0] + 1) * 127.5, "c t h w -> t h w c")), 2)}


def sigma_loss(backbone) -> dict[str, float]:
    clips = make_clips(random.Random(11), 8, 16, backbone.codec, paths={"loop": 3, "outback": 5, "wander": 2})
    texts = encode_texts(backbone, clips)
    tc = teacher.TeacherConfig(force_source=0.0, other_fraction=1.0, text_dropout=0.0, history_noise=0.0)
    out = {}
    for sigma in SIGMAS:
        fixed = lambda batch, gen, floor=0.0, s=sigma: torch.full((batch,), s)  # noqa: E731
        with mock.patch.object(teacher, "sample_sigmas", fixed), torch.no_grad():
            loss = teacher.clip_loss(PackForcingSampler(backbone, backbone.default_config, seed=0), clips, texts, tc,
                                     torch.Generator().manual_seed(0), None)
        out[str(sigma)] = round(sum(loss.block_losses.values()) / len(loss.block_losses), 4)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", action="append", required=True, help="a camera-model folder; repeat to compare")
    for weights in ap.parse_args(argv).weights:
        torch.manual_seed(0)
        backbone = camera_model.load(weights)
        print(json.dumps({"weights": weights, "speckle": speckle(backbone), "outside": outside(backbone),
                          "sigma_loss": sigma_loss(backbone)}), flush=True)


if __name__ == "__main__":
    main()
