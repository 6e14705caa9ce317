"""Where a revisit block looks: the attention mass of its queries, per layer, on each part
of what it attends. Teacher-forced, as bench/camera_recall.py (its out-and-back clips,
noise 0.9, the world's frames as history); prints JSON.

    OMP_NUM_THREADS=1 python -m bench.attention_mass --weights training/v15 [--no-prompt] [--policy full]

Per layer, the share of the softmax (averaged over clips, heads and query tokens of the
blocks that revisit a place only the mid bank holds) on: the sink blocks, the mid block(s)
that filmed the place (`source`), the other selected mid blocks, the recent block and
the block itself. The shares of a layer sum to 1. A model that copies from the mid bank
puts more than its token share on `source`.
"""

from __future__ import annotations

import argparse
import json
import math
from unittest import mock

import torch

from bench.camera_recall import clips_for, revisit_loss
from packforcing import attention
from packforcing.embedded import camera_model

PARTS = ("sink", "source", "other_mid", "recent", "self")


def part_of(index: int, block: int, row: dict, sink_blocks: int) -> str:
    if index < sink_blocks:
        return "sink"
    if index in row["mid"]:
        return "source"
    return "recent" if index >= block - 1 else "other_mid"


class Recorder:
    """Wraps attention.sdpa: the same output, and, while `name_parts` is set, each call's
    softmax mass per part (one call per layer of the denoising pass)."""

    def __init__(self, original):
        self.original = original
        # () -> (part, tokens) in the context's order; read at layer 0, after the selection
        self.name_parts = None
        self.parts: list[tuple[str, int]] = []
        self.layer = 0
        self.sums: dict[int, dict[str, float]] = {}
        self.counts: dict[int, int] = {}

    def __call__(self, q, k, v, bias=None):
        out = self.original(q, k, v, bias)
        if self.name_parts is not None:
            if self.layer == 0:
                self.parts = self.name_parts()
            logits = q.transpose(1, 2).float() @ k.transpose(1, 2).float().transpose(-1, -2) / math.sqrt(q.shape[-1])
            probs = (logits if bias is None else logits + bias.float()).softmax(-1)
            row, start = self.sums.setdefault(self.layer, dict.fromkeys(PARTS, 0.0)), 0
            for part, tokens in [*self.parts, ("self", q.shape[1])]:
                row[part] += probs[..., start : start + tokens].sum(-1).mean().item()
                start += tokens
            self.counts[self.layer] = self.counts.get(self.layer, 0) + 1
            self.layer += 1
        return out

    def shares(self) -> dict[int, dict[str, float]]:
        return {layer: {part: round(total / self.counts[layer], 4) for part, total in row.items()}
                for layer, row in self.sums.items()}


def attention_mass(backbone, clips, policy: str = "dynamic", prompted: bool = True, sigma: float = 0.9,
                   seed: int = 0) -> dict[int, dict[str, float]]:
    """camera_recall's teacher-forced pass (condition dynamic), recording its mid revisits."""
    recorder = Recorder(attention.sdpa)
    sink_blocks = backbone.default_config.replace(policy=policy).sink_blocks

    def watch(sampler, block: int, row: dict) -> None:
        recorder.layer, recorder.name_parts = 0, None
        if sampler is not None:
            recorder.name_parts = lambda: [(part_of(b.index, block, row, sink_blocks), b.tokens)
                                           for b in sampler.memory.cache.attended()]

    with mock.patch.object(attention, "sdpa", recorder):
        revisit_loss(backbone, clips, "dynamic", sigma, seed, policy, prompted, watch=watch)
    return recorder.shares()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", action="append", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--policy", default="dynamic", help="dynamic (the model's), or full: mid blocks kept whole")
    ap.add_argument("--no-prompt", action="store_true", help="denoise with a zeroed prompt: the history alone")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for weights in args.weights:
        backbone = camera_model.load(weights)
        clips = clips_for(1234, args.batch, backbone.codec)
        shares = attention_mass(backbone, clips, args.policy, prompted=not args.no_prompt)
        print(json.dumps({"weights": weights, "policy": args.policy, "prompted": not args.no_prompt,
                          "shares": shares}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
