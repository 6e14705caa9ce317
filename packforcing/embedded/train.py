"""Train the camera-conditioned embedded model from a recipe file.

    python -m packforcing.embedded.train --recipe packforcing/embedded/recipes/v12.json --out runs/v12

Teacher forcing through the engine itself (teacher.py): every clip is streamed block by
block through the same cache, attention processors, compression and selection that
sampling uses. Blocks that revisit a place only the mid bank holds weigh more, are
noised to the levels where sampling decides a layout, and teach the selection.

The same script runs on a GPU (bf16 autocast, large batches) and on the CPU. The output
folder holds the weights (EMA) + config, `state.pt` (everything a resume needs, plain
tensors and numbers: it loads with `weights_only=True`), and `curve.jsonl` (one row per
step). Started again with the same --out, a run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields

import torch

from ..sampler import PackForcingSampler
from . import camera_model
from .camera_data import V11_PATHS, Clips, make_clips
from .teacher import ReconHead, TeacherConfig, clip_loss
from .vocab import tokenize


@dataclass(frozen=True)
class TrainConfig:
    minutes: float = 90.0  # wall-clock budget of this invocation
    max_steps: int = 100000
    batch: int = 8  # clips per step (one camera path per step)
    blocks: int = 10  # blocks per clip
    paths: dict = field(default_factory=lambda: dict(V11_PATHS))  # camera path kinds and their weights
    lr: float = 1e-3
    warmup: int = 50
    # The step from which the rate falls linearly to 0 over decay_steps (warmup-stable-decay:
    # a run at a constant rate continues into its cooldown). None: constant after warmup.
    decay_from: int | None = None
    decay_steps: int = 1000
    weight_decay: float = 0.01
    ema: float = 0.99
    selection_weight: float = 0.2  # cross-entropy on the selection scores towards the source
    switch_prob: float = 0.15  # clips whose prompt (and objects) change mid-clip
    teacher: TeacherConfig = TeacherConfig()
    # PackForcingConfig fields to train under instead of the model's default config, e.g.
    # {"policy": "full"} (mid blocks kept whole): a rung of the probe ladder, not for shipping
    sampler: dict = field(default_factory=dict)
    # A curriculum for reading the mid bank: the probability a step keeps its mid blocks
    # whole (policy full), where reading starts sooner than through 8x compression; the
    # other steps, and sampling, use the model's config. 0 = off.
    mix_full: float = 0.0
    prediction_type: str = "flow_prediction"  # or "sample": the transformer outputs the clean latent
    bind_objects: bool = False  # the prompt encoder gives each object's words together (vocab.TinyTextEncoder)
    # a run folder whose EMA weights (state.pt) a new run starts from, with a fresh optimizer
    # and counters; None: random weights. A resumed run ignores it.
    init: str | None = None
    threads: int = 2
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # autocast on cuda
    checkpoint_minutes: float = 5.0
    seed: int = 0

    def __post_init__(self):
        if self.decay_steps < 1 or (self.decay_from is not None and self.decay_from < 0):
            raise ValueError(f"decay_from={self.decay_from}, decay_steps={self.decay_steps}: decay_from must be "
                             "None or a step >= 0, and decay_steps at least 1")

    @classmethod
    def from_file(cls, path: str, **overrides) -> TrainConfig:
        with open(path) as f:
            data = json.load(f)
        return cls.from_dict(data, path, **overrides)

    @classmethod
    def from_dict(cls, data: dict, where: str = "recipe", **overrides) -> TrainConfig:
        teacher_keys = {f.name for f in fields(TeacherConfig)}
        known = {f.name for f in fields(cls)} | teacher_keys
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown fields {unknown}; allowed: {sorted(known)}")
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        teacher = TeacherConfig(**{k: data.pop(k) for k in list(data) if k in teacher_keys})
        return cls(**data, teacher=teacher)

    def to_dict(self) -> dict:
        out = asdict(self)
        return {**{k: v for k, v in out.items() if k != "teacher"}, **out["teacher"]}


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


def _device(tc: TrainConfig) -> torch.device:
    if tc.device != "auto":
        return torch.device(tc.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def learning_rate(tc: TrainConfig, step: int) -> float:
    """The rate of 0-based step `step`: linear warmup, constant, then an optional linear decay."""
    rate = tc.lr * min(1.0, (step + 1) / tc.warmup)
    if tc.decay_from is not None and step >= tc.decay_from:
        rate *= max(0.0, 1 - (step - tc.decay_from) / tc.decay_steps)
    return rate


class Run:
    """Model, optimizer, EMA and curve of one output folder; resumes what is there."""

    def __init__(self, tc: TrainConfig, out: str):
        self.tc, self.out, self.device = tc, out, _device(tc)
        torch.set_num_threads(tc.threads)
        self.backbone = camera_model.build(tc.seed, prediction_type=tc.prediction_type, bind_objects=tc.bind_objects)
        self.backbone.transformer.to(self.device)
        # the rebuild head trains beside the model and lives in state.pt only (sampling never uses it)
        self.head = None
        if tc.teacher.recon_weight > 0:
            self.head = ReconHead(self.backbone.hr_compressor.net[-1].out_channels, self.backbone.codec.latent_channels)
        modules = [*camera_model.trainable_modules(self.backbone).values(), *([self.head] if self.head else [])]
        for m in modules:
            m.to(self.device).train()
        self.params = [p for m in modules for p in m.parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=tc.lr, weight_decay=tc.weight_decay)
        self.ema = [p.detach().clone() for p in self.params]
        self.step, self.minutes, self.revisits = 0, 0.0, 0
        self.rng, self.gen = random.Random(tc.seed), torch.Generator().manual_seed(tc.seed)
        config = self.backbone.default_config.replace(**tc.sampler)
        self.sampler = PackForcingSampler(self.backbone, config, seed=tc.seed)
        self.full_sampler = PackForcingSampler(self.backbone, config.replace(policy="full"), seed=tc.seed)
        os.makedirs(out, exist_ok=True)
        if os.path.exists(os.path.join(out, "state.pt")):
            self.resume()
        elif tc.init is not None:
            self.start_from(tc.init)

    def state(self) -> dict:
        """Everything a resume needs, as tensors, numbers, strings and lists."""
        version, internal, gauss = self.rng.getstate()
        return {
            "params": [p.detach() for p in self.params],
            "ema": self.ema,
            "opt": self.opt.state_dict(),
            "counters": {"step": self.step, "minutes": self.minutes, "revisits": self.revisits},
            "rng": {"version": version, "internal": list(internal), "gauss": gauss},
            "gen": self.gen.get_state(),
            "recipe": json.dumps(self.tc.to_dict()),
        }

    def resume(self) -> None:
        state = torch.load(os.path.join(self.out, "state.pt"), map_location=self.device, weights_only=True)
        for p, v in zip(self.params, state["params"], strict=True):
            p.data.copy_(v)
        for e, v in zip(self.ema, state["ema"], strict=True):
            e.copy_(v)
        self.opt.load_state_dict(state["opt"])
        c = state["counters"]
        self.step, self.minutes, self.revisits = c["step"], c["minutes"], c["revisits"]
        r = state["rng"]
        self.rng.setstate((r["version"], tuple(r["internal"]), r["gauss"]))
        self.gen.set_state(state["gen"])
        print(f"resumed {self.out} at step {self.step} ({self.minutes:.1f} min)", flush=True)

    def start_from(self, folder: str) -> None:
        """Weights from another run's EMA (the rebuild head's included); the optimizer starts afresh."""
        path = os.path.join(folder, "state.pt")
        ema = torch.load(path, map_location=self.device, weights_only=True)["ema"]
        shapes = [tuple(v.shape) for v in ema]
        if shapes != [tuple(p.shape) for p in self.params]:
            raise ValueError(f"{path}: its {len(ema)} tensors do not match this recipe's model and rebuild head")
        for p, e, v in zip(self.params, self.ema, ema, strict=True):
            p.data.copy_(v)
            e.copy_(v)
        print(f"started {self.out} from {folder}", flush=True)

    def save(self) -> None:
        tmp = os.path.join(self.out, "state.tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, os.path.join(self.out, "state.pt"))
        raw = [p.detach().clone() for p in self.params]
        torch._foreach_copy_([p.data for p in self.params], self.ema)
        meta = {"steps": self.step, "minutes": round(self.minutes, 2), "revisit_blocks": self.revisits,
                "recipe": self.tc.to_dict(), "device": str(self.device)}
        camera_model.save(self.backbone, self.out, meta)
        camera_model.save(self.backbone, os.path.join(self.out, "ckpts", str(self.step)), meta)  # for probes
        torch._foreach_copy_([p.data for p in self.params], raw)

    def train_step(self) -> dict:
        tc, t0, cpu0 = self.tc, time.time(), time.process_time()
        lr = learning_rate(tc, self.step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        clips = make_clips(self.rng, tc.batch, tc.blocks, self.backbone.codec, tc.switch_prob, tc.paths)
        full = tc.mix_full > 0 and self.rng.random() < tc.mix_full
        sampler = self.full_sampler if full else self.sampler
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda" and tc.bf16)
        with autocast:
            texts = encode_texts(self.backbone, clips)
            out = clip_loss(sampler, clips, texts, tc.teacher, self.gen, self.head)
            terms = [w * t for w, t in ((1.0, out.total), (tc.selection_weight, out.selection),
                                         (tc.teacher.recon_weight, out.recon), (tc.teacher.read_weight, out.read))
                     if t is not None]
        self.opt.zero_grad(set_to_none=True)
        norm = torch.zeros(())
        # none when the clips drew no revisit and left out every other block (other_fraction < 1)
        if terms:
            sum(terms).backward()
            norm = torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1 - tc.ema)
        self.step += 1
        self.minutes += (time.time() - t0) / 60
        self.revisits += len(out.revisits) * tc.batch
        row = curve_row(self, out, norm, lr, clips, time.time() - t0, time.process_time() - cpu0)
        return {**row, "policy": sampler.config.policy}


def curve_row(run: Run, out, norm, lr: float, clips: Clips, seconds: float, cpu: float) -> dict:
    def mean(xs):
        return round(sum(xs) / len(xs), 5) if xs else None

    losses = out.block_losses
    return {
        "step": run.step,
        "minutes": round(run.minutes, 3),
        "loss": round(out.total.item(), 5) if out.total is not None else None,
        "selection_ce": round(out.selection.item(), 4) if out.selection is not None else None,
        "recon": round(out.recon.item(), 4) if out.recon is not None else None,
        "read": round(out.read.item(), 4) if out.read is not None else None,
        "mid_revisit_flow": mean([losses[c] for c in out.revisits]),
        "other_flow": mean([v for c, v in losses.items() if c not in out.revisits]),
        "selection_hit": mean(out.hits),
        "revisit_blocks": len(out.revisits) * run.tc.batch,
        "trained_blocks": len(losses) * run.tc.batch,
        "grad_norm": round(norm.item(), 3),
        "lr": lr,
        "switch": clips.switch,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
    }


def drop_rows_after(path: str, step: int) -> None:
    """A run resumed from its last checkpoint trains the steps after it again: the rows an
    interrupted process wrote for them go, so the curve holds each step once."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m packforcing.embedded.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", required=True, help="a recipe file, e.g. packforcing/embedded/recipes/v12.json")
    ap.add_argument("--out", required=True, help="output folder (resumed when it holds a run)")
    # a cooldown is the same recipe with its decay fields set from the state's step
    names = ("minutes", "max_steps", "threads", "checkpoint_minutes", "decay_from", "decay_steps")
    for name in names:
        ap.add_argument("--" + name.replace("_", "-"), type=float if "minutes" in name else int, default=None)
    args = ap.parse_args(argv)
    overrides = {k: getattr(args, k) for k in names}
    tc = TrainConfig.from_file(args.recipe, **overrides)
    run = Run(tc, args.out)
    path = os.path.join(args.out, "curve.jsonl")
    drop_rows_after(path, run.step)
    start, last_ckpt = time.time(), time.time()
    with open(path, "a") as curve:
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
