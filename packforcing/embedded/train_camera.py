"""Train the v11 embedded model from scratch (camera-conditioned world, memory on revisits).

    python -m packforcing.embedded.train_camera --recipe packforcing/embedded/recipes/v11.json --out runs/v11

Teacher forcing through the engine itself: every clip is streamed block by block through
the same cache, attention processors, compression and selection that sampling uses. Per
block the model predicts the flow velocity of a noised copy, then writes the block's K/V
with gradients attached (so the write pass, the compressor and the place embedding learn
through the attention they feed). Blocks that revisit a place only the mid bank holds
weigh more, are noised to the levels where sampling decides a layout, and teach the
selection (a cross-entropy on its scores towards the block that filmed the place).

The same script runs on a GPU (bf16 autocast, large batches) and on the CPU. The output
folder holds the weights (EMA) + config, `state.pt` (resume: the run continues where it
stopped when started again with the same --out) and `curve.jsonl` (one row per step).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import asdict, dataclass, fields

import torch

from ..attention import SelectionHook
from ..decoding import Decoded
from ..sampler import PackForcingSampler
from ..selection import score_matrix
from . import camera_model
from .camera_data import Clips, is_mid_revisit, make_clips
from .vocab import tokenize


@dataclass(frozen=True)
class TrainConfig:
    minutes: float = 90.0  # wall-clock budget of this invocation
    max_steps: int = 100000
    batch: int = 8  # clips per step (one camera path per step)
    blocks: int = 10  # blocks per clip
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.01
    ema: float = 0.99
    history_noise: float = 0.1  # largest noise added to the written history
    text_dropout: float = 0.1  # trains guidance's unconditional branch
    revisit_weight: float = 3.0  # flow-loss weight of blocks whose place only the mid bank holds
    revisit_sigma_floor: float = 0.5  # their noise levels: recall must happen in the first Euler steps
    force_source: float = 0.5  # probability a mid revisit must attend its source (reading is learned)
    selection_weight: float = 0.2  # cross-entropy on the selection scores towards the source
    switch_prob: float = 0.15  # clips whose prompt (and objects) change mid-clip (issue 20)
    threads: int = 2
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # autocast on cuda
    checkpoint_minutes: float = 5.0
    seed: int = 0

    @classmethod
    def from_file(cls, path: str, **overrides) -> TrainConfig:
        with open(path) as f:
            data = json.load(f)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown fields {unknown}; allowed: {sorted(known)}")
        return cls(**{**data, **{k: v for k, v in overrides.items() if v is not None}})


def sample_sigmas(batch: int, gen: torch.Generator, floor: float = 0.0) -> torch.Tensor:
    """Half logit-normal, half uniform noise levels in [floor, 1]."""
    logit_normal = torch.sigmoid(torch.randn(batch, generator=gen))
    uniform = torch.rand(batch, generator=gen)
    s = torch.where(torch.rand(batch, generator=gen) < 0.5, logit_normal, uniform).clamp(1e-3, 1.0)
    return floor + (1 - floor) * s


def _selection_ce(sampler, hook: SelectionHook, mid_sources: list[int]) -> torch.Tensor | None:
    cache, cfg = sampler.memory.cache, sampler.config
    bank = list(cache.mid)
    if hook.query_sum is None or not mid_sources or len(bank) <= len(mid_sources):
        return None
    scores = score_matrix(
        hook.query_sum, [cache.mid[m].key_sum for m in bank], hook.query_sum.shape[-1], cfg.score_head_fraction
    )
    logits = scores / (scores.std(dim=1, keepdim=True).detach() + 1e-6)
    positive = torch.tensor([m in mid_sources for m in bank])
    return -(logits.log_softmax(1)[:, positive].logsumexp(1)).mean()


def clip_loss(
    sampler: PackForcingSampler, clips: Clips, texts: list[torch.Tensor], tc: TrainConfig, gen: torch.Generator
):
    """(weighted flow loss, selection loss, stats) of one teacher-forced pass over the clips."""
    cfg, device = sampler.config, sampler.backbone.device
    bf, batch = cfg.block_frames, clips.latent.shape[0]
    sampler.backbone.place.set_clip(clips.xs)
    flow, weights, sel, stats = [], [], [], {"mid_flow": [], "other_flow": [], "hit": []}
    try:
        for c, row in enumerate(clips.sources):
            x0 = clips.latent[:, :, c * bf : (c + 1) * bf].to(device)
            mid = [m for m in row["mid"] if m in sampler.memory.cache.mid] if is_mid_revisit(row) else []
            hook = SelectionHook(
                mid[: cfg.top_k] if mid and torch.rand((), generator=gen).item() < tc.force_source else []
            )
            sampler.begin_block(c, hook=hook)
            sigma = sample_sigmas(batch, gen, tc.revisit_sigma_floor if mid else 0.0).to(device)
            s = sigma.view(batch, 1, 1, 1, 1)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            keep = (torch.rand(batch, 1, 1, generator=gen) >= tc.text_dropout).to(device, texts[c].dtype)
            v = sampler.forward((1 - s) * x0 + s * noise, sigma * cfg.num_train_timesteps, texts[c] * keep)
            loss = ((v.float() - (noise - x0)) ** 2).mean()
            flow.append(loss)
            weights.append(tc.revisit_weight if mid else 1.0)
            (stats["mid_flow"] if mid else stats["other_flow"]).append(loss.item())
            if mid and not hook.required:
                stats["hit"].append(float(bool(set(sampler.memory.cache.selected) & set(mid))))
            if mid:
                ce = _selection_ce(sampler, hook, mid)
                if ce is not None:
                    sel.append(ce)
            level = tc.history_noise * torch.rand(batch, 1, 1, 1, 1, generator=gen).to(device)
            clean = x0 + level * torch.randn(x0.shape, generator=gen).to(device)
            px = clips.pixels[:, :, c * 16 : (c + 1) * 16].to(device)
            sampler.memory.admit(sampler.write_block(c, clean, texts[c]), clean, Decoded(pixels=px), texts[c])
    finally:
        sampler.memory.reset()
    w = torch.tensor(weights, device=device)
    total = (torch.stack(flow) * w).sum() / w.sum()
    return total, (torch.stack(sel).mean() if sel else None), stats


def encode_texts(backbone, clips: Clips) -> list[torch.Tensor]:
    """Per block, the (B, L, D) text embedding of the prompts in force (one pass per distinct list)."""
    done: dict[tuple, torch.Tensor] = {}
    out = []
    for prompts in clips.prompts:
        key = tuple(prompts)
        if key not in done:
            done[key] = backbone.text_encoder(tokenize(list(prompts)).to(backbone.device))
        out.append(done[key])
    return out


class Run:
    """Model, optimizer, EMA and curve of one output folder; resumes what is there."""

    def __init__(self, tc: TrainConfig, out: str):
        self.tc, self.out = tc, out
        self.device = torch.device(
            "cuda"
            if tc.device == "auto" and torch.cuda.is_available()
            else ("cpu" if tc.device == "auto" else tc.device)
        )
        torch.set_num_threads(tc.threads)
        self.backbone = camera_model.build(tc.seed)
        self.backbone.transformer.to(self.device)
        for m in camera_model.trainable_modules(self.backbone).values():
            m.to(self.device).train()
        self.params = [p for m in camera_model.trainable_modules(self.backbone).values() for p in m.parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=tc.lr, weight_decay=tc.weight_decay)
        self.ema = [p.detach().clone() for p in self.params]
        self.step, self.minutes = 0, 0.0
        self.rng, self.gen = random.Random(tc.seed), torch.Generator().manual_seed(tc.seed)
        self.sampler = PackForcingSampler(self.backbone, self.backbone.default_config, seed=tc.seed)
        os.makedirs(out, exist_ok=True)
        if os.path.exists(os.path.join(out, "state.pt")):
            self._resume()

    def _resume(self) -> None:
        state = torch.load(os.path.join(self.out, "state.pt"), map_location=self.device, weights_only=False)
        for p, v in zip(self.params, state["params"], strict=True):
            p.data.copy_(v)
        for e, v in zip(self.ema, state["ema"], strict=True):
            e.copy_(v)
        self.opt.load_state_dict(state["opt"])
        self.step, self.minutes = state["step"], state["minutes"]
        self.rng.setstate(state["rng"])
        self.gen.set_state(state["gen"])
        print(f"resumed {self.out} at step {self.step} ({self.minutes:.1f} min)", flush=True)

    def save(self) -> None:
        state = {
            "params": [p.detach() for p in self.params],
            "ema": self.ema,
            "opt": self.opt.state_dict(),
            "step": self.step,
            "minutes": self.minutes,
            "rng": self.rng.getstate(),
            "gen": self.gen.get_state(),
        }
        torch.save(state, os.path.join(self.out, "state.tmp"))
        os.replace(os.path.join(self.out, "state.tmp"), os.path.join(self.out, "state.pt"))
        raw = [p.detach().clone() for p in self.params]
        for p, e in zip(self.params, self.ema, strict=True):
            p.data.copy_(e)
        camera_model.save(
            self.backbone,
            self.out,
            {
                "steps": self.step,
                "minutes": round(self.minutes, 2),
                "recipe": asdict(self.tc),
                "device": str(self.device),
            },
        )
        for p, r in zip(self.params, raw, strict=True):
            p.data.copy_(r)

    def train_step(self) -> dict:
        tc, t0 = self.tc, time.time()
        lr = tc.lr * min(1.0, (self.step + 1) / tc.warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr
        clips = make_clips(self.rng, tc.batch, tc.blocks, self.backbone.codec, tc.switch_prob)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda" and tc.bf16)
        with autocast:
            texts = encode_texts(self.backbone, clips)
            flow, sel, stats = clip_loss(self.sampler, clips, texts, tc, self.gen)
            loss = flow + (tc.selection_weight * sel if sel is not None else 0.0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        with torch.no_grad():
            for p, e in zip(self.params, self.ema, strict=True):
                e.lerp_(p.detach(), 1 - tc.ema)
        self.step += 1
        self.minutes += (time.time() - t0) / 60
        mean = lambda xs: round(sum(xs) / len(xs), 5) if xs else None  # noqa: E731
        return {
            "step": self.step,
            "minutes": round(self.minutes, 3),
            "loss": round(flow.item(), 5),
            "selection_ce": round(sel.item(), 4) if sel is not None else None,
            "mid_revisit_flow": mean(stats["mid_flow"]),
            "other_flow": mean(stats["other_flow"]),
            "selection_hit": mean(stats["hit"]),
            "grad_norm": round(norm.item(), 3),
            "lr": lr,
            "switch": clips.switch,
            "seconds": round(time.time() - t0, 2),
        }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m packforcing.embedded.train_camera", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--recipe", default=os.path.join(os.path.dirname(__file__), "recipes", "v11.json"))
    ap.add_argument("--out", default="runs/v11")
    for f in fields(TrainConfig):
        if f.type in ("float", "int", "str"):
            ap.add_argument(
                "--" + f.name.replace("_", "-"), type={"float": float, "int": int, "str": str}[f.type], default=None
            )
    args = ap.parse_args(argv)
    tc = TrainConfig.from_file(
        args.recipe, **{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    )
    run = Run(tc, args.out)
    start, last_ckpt = time.time(), time.time()
    with open(os.path.join(args.out, "curve.jsonl"), "a") as curve:
        while run.step < tc.max_steps and time.time() - start < tc.minutes * 60:
            row = run.train_step()
            curve.write(json.dumps(row) + "\n")
            curve.flush()
            if run.step % 10 == 0:
                print(json.dumps(row), flush=True)
            if time.time() - last_ckpt > tc.checkpoint_minutes * 60:
                run.save()
                last_ckpt = time.time()
    run.save()
    print(f"saved {args.out} at step {run.step} ({run.minutes:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
