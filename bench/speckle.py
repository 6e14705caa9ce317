"""How noisy are the camera model's frames, and how well does it denoise at each noise level?
Prints one JSON line per checkpoint.

    OMP_NUM_THREADS=1 python -m bench.speckle --weights runs/v12/ckpts/3515 [--weights ...]

speckle: mean |difference| between horizontally neighbouring pixels (0-255) of a 12-s
  sample per prompt (seed 1000, camera right); the world's own frames give about 1.5.
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

from packforcing.embedded import camera_model, teacher
from packforcing.embedded.camera_data import make_clips
from packforcing.embedded.train import encode_texts
from packforcing.events import Frames
from packforcing.pipeline import PackForcingPipeline
from packforcing.sampler import PackForcingSampler

PROMPTS = ["a red circle and a blue square", "a green triangle and a yellow circle",
           "a white square and a red triangle"]
SIGMAS = (0.05, 0.15, 0.3, 0.5, 0.7, 0.9)


def speckle(backbone) -> float:
    pipe = PackForcingPipeline(backbone)
    values = []
    for prompt in PROMPTS:
        video = np.concatenate([e.frames for e in pipe.stream(prompt, seconds=12, seed=1000, config=pipe.default_config,
                                                               camera="right:12") if isinstance(e, Frames)])
        values.append(np.abs(np.diff(video.astype(float), axis=2)).mean())
    return round(float(np.mean(values)), 2)


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
        print(json.dumps({"weights": weights, "speckle": speckle(backbone), "sigma_loss": sigma_loss(backbone)}),
              flush=True)


if __name__ == "__main__":
    main()
