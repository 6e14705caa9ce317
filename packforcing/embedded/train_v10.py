"""Train the v10 embedded world model, the shipped weights (a chain of resumed legs; see the model card). New models
train with the recipe trainer, packforcing.embedded.train.

    python -m packforcing.embedded.train_v10 --out assets/embedded --minutes 40

Teacher forcing through the engine itself: each training clip (12 s of the procedural world, 1.5 camera loops) is
streamed block by block through the same cache, attention processors, compression and selection that sampling uses,
so the model is trained under exactly the bounded context shape it samples with (sink + selected compressed mid
blocks + recent + current). For every block it predicts the flow velocity v = noise - x0 of a copy noised at a
random continuous level (rectified flow; the embedded model samples with Euler steps), then writes the block's K/V
into the cache with gradients attached, so the write pass, the HR compressor and the text encoder all learn through
the attention they feed. A second, cheaper batch of clips cut to their first blocks trains generation from an empty
cache, the hardest part. Checkpoints (a moving average of the weights) are written every few minutes, so a stop
loses little.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time

import torch

from ..attention import SelectionHook
from ..decoding import Decoded
from ..sampler import PackForcingSampler
from ..scheduler import euler_step
from .data import own_revisit_clip, world_batch
from .model import EMBEDDED_CONFIG, add_camera_clock, build_embedded, load_embedded, save_embedded, trainable_modules
from .teacher import sample_sigmas, selection_ce
from .vocab import tokenize
from .world import LOOP_FRAMES, prompt_for, sample_spec

# 1.5 camera loops: blocks 8-9 revisit the sink, blocks 10-11 places that only the
# compressed mid bank still holds (v7 tried 14, for four such blocks)
CLIP_BLOCKS = 12


@torch.no_grad()
def _partial_rollout(sampler: PackForcingSampler, x0: torch.Tensor, text: torch.Tensor, gen: torch.Generator, steps=3):
    """SDEdit from a random level in [0.4, 0.8] (per clip) down to x0, in `steps` Euler steps."""
    batch = x0.shape[0]
    start = (0.4 + 0.4 * torch.rand(batch, generator=gen)).view(batch, 1, 1, 1, 1)
    x = (1 - start) * x0 + start * torch.randn(x0.shape, generator=gen)
    for k in range(steps):
        s = start * (1 - k / steps)
        v = sampler.forward(x, s.flatten() * sampler.config.num_train_timesteps, text)
        pred = x - s * v
        if k + 1 < steps:
            x = euler_step(x, pred, s, start * (1 - (k + 1) / steps))
    return pred


def clip_loss(sampler: PackForcingSampler, text: torch.Tensor, pixels, latent, gen: torch.Generator,
              history_noise: float, self_history: float = 0.0, text_dropout: float = 0.0, recall_selection: float = 0.0,
              losses_out: dict | None = None, loss_from: int = 0, sigma_floor: float = 0.0):
    """Per-block, per-clip flow-matching losses (blocks, B) of one teacher-forced pass
    through the engine (v-prediction, v = noise - x0). The clips of a batch share one
    selection per block (their scores are averaged).

    Recall from the mid bank has to be learned twice over: the model must read a
    revisited place out of compressed tokens, and the selection must attend them. Each
    waits for the other (a model that ignores compressed tokens gives the selection
    nothing to find; a block never selected gives the model nothing to read). So, for
    the blocks whose source (the block one camera loop back) sits in the mid bank:
    - with probability `recall_selection` (per block) the selection must include the
      source, so reading it is learned;
    - `losses_out["selection"]` collects a cross-entropy on the differentiable
      selection scores of each clip, over the mid bank, towards the source and its two
      neighbours (scores scaled by their spread, so only the ranking is trained), so
      the selection learns to find them by itself at sampling.

    With probability `self_history` a block's history is the model's own rollout, as at
    sampling time (drawn per block for the whole batch: the cache is batched, so a
    rollout costs the same for one clip as for all): the ground truth is noised to a level in [0.4, 0.8]
    (coarse layout survives, details do not) and denoised by the model in a few Euler
    steps under the same context. Their targets stay the ground truth, so the model
    learns to repair its own past (objects it let fade, speckle it left) instead of
    carrying the errors forward. Without it the model only ever sees a perfect past
    and drifts on its own.

    With probability `text_dropout` a clip's denoising pass of a block sees a zeroed
    text embedding (the encoder's output for an all-padding prompt) while its cache
    writes keep the prompt: exactly the unconditional pass of classifier-free guidance
    at sampling time, which shares the prompt-written cache.

    `loss_from` and `sigma_floor` make a revisit batch: blocks before `loss_from` only
    build the cache (their denoising pass runs without gradient, to score the
    selection as sampling does), and the rest are noised to levels in [sigma_floor, 1]:
    recall has to happen in the first Euler steps, where sampling decides a layout."""
    backbone, cfg, cache = sampler.backbone, sampler.config, sampler.memory.cache
    bf = cfg.block_frames
    frames_per_block = bf * backbone.codec.temporal_factor
    batch = latent.shape[0]
    loop_blocks = LOOP_FRAMES // frames_per_block
    losses, selection_losses = [], []
    try:
        for c in range(latent.shape[2] // bf):
            x0 = latent[:, :, c * bf : (c + 1) * bf]
            sources = [m for m in (c - loop_blocks - 1, c - loop_blocks, c - loop_blocks + 1) if m in cache.mid]
            draw = recall_selection and c - loop_blocks in cache.mid
            forced = draw and torch.rand((), generator=gen).item() < recall_selection
            hook = SelectionHook(required=[c - loop_blocks] if forced else [])
            sampler.begin_block(c, hook=hook)
            sigma = sample_sigmas(batch, gen)
            if c >= loss_from:
                sigma = sigma_floor + (1 - sigma_floor) * sigma
            s = sigma.view(batch, 1, 1, 1, 1)
            noise = torch.randn(x0.shape, generator=gen)
            x_t = (1 - s) * x0 + s * noise
            keep = (torch.rand(batch, 1, 1, generator=gen) >= text_dropout).to(text.dtype)
            with torch.set_grad_enabled(c >= loss_from and torch.is_grad_enabled()):
                v = sampler.forward(x_t, sigma * cfg.num_train_timesteps, text * keep)
            if c >= loss_from:
                losses.append(((v - (noise - x0)) ** 2).mean(dim=(1, 2, 3, 4)))
            ce = selection_ce(sampler, hook, sources) if losses_out is not None else None
            if ce is not None:
                selection_losses.append(ce)
            # History is the ground truth with up to `history_noise` of speckle, or the
            # model's own partial rollout.
            level = history_noise * torch.rand(batch, 1, 1, 1, 1, generator=gen)
            clean = x0 + level * torch.randn(x0.shape, generator=gen)
            if self_history and torch.rand((), generator=gen).item() < self_history:
                clean = _partial_rollout(sampler, x0, text, gen)
            px = Decoded(pixels=pixels[:, :, c * frames_per_block : (c + 1) * frames_per_block])
            sampler.memory.admit(sampler.write_block(c, clean, text), clean, px, text)
    finally:
        sampler.memory.reset()
    if losses_out is not None:
        losses_out["selection"] = torch.stack(selection_losses).mean() if selection_losses else None
    return torch.stack(losses)


def _previous_run(directory: str) -> dict:
    with open(os.path.join(directory, "config.json")) as f:
        meta = json.load(f)
    return {"steps": int(meta.get("steps", 0)), "minutes": float(meta.get("minutes", 0.0))}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m packforcing.embedded.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="assets/embedded")
    ap.add_argument("--minutes", type=float, default=40.0, help="wall-clock training budget")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=8, help="clips per step (they share one selection per block)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--history-noise", type=float, default=0.15, help="largest noise added to the history (per clip, "
                    "uniform up to this)")
    ap.add_argument("--self-history", type=float, default=0.5, help="probability that a block's history is the "
                    "model's own partial rollout")
    ap.add_argument("--text-dropout", type=float, default=0.1, help="probability that a clip's denoising pass sees no "
                    "prompt (trains the unconditional branch of guidance)")
    ap.add_argument("--ema", type=float, default=0.99, help="decay of the weight average that checkpoints save (0: "
                    "save the raw weights)")
    ap.add_argument("--short-batch", type=int, default=16, help="extra clips per step cut to the first --short-blocks "
                    "blocks (generation from nothing is the hardest part and the cheapest to train)")
    ap.add_argument("--short-blocks", type=int, default=2)
    # recall from the mid bank (off in the recipe of the shipped weights)
    ap.add_argument("--recall-selection", type=float, default=0.0, help="probability that a block whose revisit "
                    "source is in the mid bank must attend it")
    ap.add_argument("--recall-weight", type=float, default=1.0, help="weight of the flow loss of blocks whose revisit "
                    "source only the mid bank holds (the rest weigh 1)")
    ap.add_argument("--selection-loss", type=float, default=0.0, help="weight of the cross-entropy that teaches the "
                    "selection scores to rank the revisit source first")
    ap.add_argument("--proportional-attention", action="store_true", help="train with config.proportional_attention "
                    "(sample with it too)")
    ap.add_argument("--revisit-batch", type=int, default=0, help="extra clips per step of --revisit-blocks blocks "
                    "whose loss covers only the blocks that revisit a place (one camera loop on), noised to at least "
                    "--revisit-sigma-floor")
    ap.add_argument("--revisit-blocks", type=int, default=14)
    ap.add_argument("--revisit-from", type=int, default=None, help="first block of the revisit batch with a loss "
                    "(default: one camera loop, 8; a slow pan shows the first places again from block 4 on)")
    ap.add_argument("--revisit-sigma-floor", type=float, default=0.75, help="lowest noise level of the revisit batch: "
                    "recall has to happen in the first Euler steps, where a block's layout is decided")
    ap.add_argument("--revisit-weight", type=float, default=1.0, help="weight of the revisit batch's loss, added to "
                    "the step's loss")
    ap.add_argument("--own-revisit-batch", type=int, default=0, help="extra clips per step whose first camera loop is "
                    "the model's own rollout and whose loss covers only the revisits of it (blocks one loop on, whose "
                    "targets are the model's own blocks one loop back), noised to at least --revisit-sigma-floor")
    ap.add_argument("--own-revisit-blocks", type=int, default=10, help="blocks of each --own-revisit-batch clip (the "
                    "first loop, 8, then the revisits)")
    ap.add_argument("--own-revisit-weight", type=float, default=1.0, help="weight of the own-revisit loss, added to "
                    "the step's loss")
    ap.add_argument("--resume", action="store_true", help="continue from the weights in --out")
    ap.add_argument("--add-camera-clock", action="store_true", help="give resumed weights trained without the camera "
                    "clock a (zero) clock; fresh weights always have one")
    ap.add_argument("--clock-lr-scale", type=float, default=10.0, help="learning rate of the camera clock's table, in "
                    "multiples of --lr")
    ap.add_argument("--restart-hr", action="store_true", help="start the HR compressor afresh (zero output: "
                    "compressed tokens begin as the LR branch's)")
    ap.add_argument("--clip-blocks", type=int, default=CLIP_BLOCKS)
    ap.add_argument("--checkpoint-minutes", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--run", default="", help="label written into each curve row (a resumed lineage keeps its runs "
                    "apart)")
    return ap


def _optimizer(backbone, args):
    """(trainable parameters, AdamW, EMA copy or None) for the backbone's trainable modules."""
    modules = trainable_modules(backbone)
    params = [p for m in modules.values() for p in m.parameters()]
    for m in modules.values():
        m.train().requires_grad_(True)
    # the clock starts at zero inside trained weights: at the base rate its entries would
    # stay small against the timestep embedding (std ~0.6) for a whole CPU session
    clock_params = set(modules["clock"].parameters()) if "clock" in modules else set()
    groups = [{"params": [p for p in params if p not in clock_params], "scale": 1.0}]
    if clock_params:
        groups.append({"params": list(clock_params), "scale": args.clock_lr_scale, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    # checkpoints hold an exponential moving average of the weights: the raw weights of
    # consecutive checkpoints can differ in whether objects persist; the average moves steadily
    ema = [p.detach().clone() for p in params] if args.ema else None
    return params, opt, ema


def _open_log(args):
    """(curve file, steps and minutes already done). A resumed run continues the saved
    run's counts (one curve); rows a killed run logged after its last checkpoint are
    dropped, their steps were lost."""
    log_path = os.path.join(args.out, "training_curve.jsonl")
    os.makedirs(args.out, exist_ok=True)
    done = _previous_run(args.out) if args.resume else {"steps": 0, "minutes": 0.0}
    kept_rows = []
    if args.resume and os.path.exists(log_path):
        with open(log_path) as f:
            kept_rows = [line for line in f if json.loads(line)["step"] <= done["steps"]]
    log = open(log_path, "w")
    log.writelines(kept_rows)
    return log, done


def _step_losses(sampler, args, rng, gen, blocks: dict) -> dict:
    """Every loss of one step: the main batch (weighted per block), the short batch and the
    optional revisit batches; `total` is what is backpropagated."""
    backbone = sampler.backbone
    prompts, pixels, latent = world_batch(rng, args.batch, args.clip_blocks, backbone.codec)
    text = backbone.text_encoder(tokenize(prompts))
    extra = {}
    per_block = clip_loss(sampler, text, pixels, latent, gen, args.history_noise, args.self_history, args.text_dropout,
                          args.recall_selection, extra).mean(dim=1)
    weights = torch.ones_like(per_block)
    weights[blocks["first_mid_recall"]:] = args.recall_weight
    loss = (weights * per_block).sum() / weights.sum()
    selection_loss = extra["selection"]
    if args.short_batch:
        s_prompts, s_pixels, s_latent = world_batch(rng, args.short_batch, args.short_blocks, backbone.codec)
        short = clip_loss(sampler, backbone.text_encoder(tokenize(s_prompts)), s_pixels, s_latent, gen,
                          args.history_noise, text_dropout=args.text_dropout).mean(dim=1)
        loss = 0.5 * (loss + short.mean())
    total = loss + args.selection_loss * selection_loss if selection_loss is not None and args.selection_loss else loss
    revisit = own = None
    if args.revisit_batch:
        r_prompts, r_pixels, r_latent = world_batch(rng, args.revisit_batch, args.revisit_blocks, backbone.codec)
        revisit = clip_loss(sampler, backbone.text_encoder(tokenize(r_prompts)), r_pixels, r_latent, gen,
                            args.history_noise, args.self_history, args.text_dropout,
                            args.recall_selection, loss_from=blocks["revisit_from"],
                            sigma_floor=args.revisit_sigma_floor).mean(dim=1)
        total = total + args.revisit_weight * revisit.mean()
    if args.own_revisit_batch:
        o_text = backbone.text_encoder(tokenize([prompt_for(sample_spec(rng)) for _ in range(args.own_revisit_batch)]))
        o_latent, o_pixels = own_revisit_clip(sampler, o_text.detach(), args.own_revisit_blocks, blocks["loop"])
        own = clip_loss(sampler, o_text, o_pixels, o_latent, gen, args.history_noise, 0.0, args.text_dropout,
                        args.recall_selection, loss_from=blocks["loop"],
                        sigma_floor=args.revisit_sigma_floor).mean(dim=1)
        total = total + args.own_revisit_weight * own.mean()
    return {"total": total, "loss": loss, "per_block": per_block, "selection": selection_loss, "revisit": revisit,
            "own": own}


def _curve_row(args, losses: dict, blocks: dict, step: int, minutes: float, lr: float) -> dict:
    per_block, revisit, first_mid_recall = losses["per_block"], losses["revisit"], blocks["first_mid_recall"]
    row = {"step": step, "minutes": round(minutes, 2), "loss": round(losses["loss"].item(), 5),
           "loss_first_block": round(per_block[0].item(), 5), "loss_first_loop": round(per_block[:8].mean().item(), 5),
           "lr": lr}
    if args.run:
        row["run"] = args.run
    if len(per_block) > 8:
        row["loss_revisit"] = round(per_block[8:].mean().item(), 5)
    if len(per_block) > first_mid_recall:
        row["loss_recall_mid"] = round(per_block[first_mid_recall:].mean().item(), 5)
    if losses["selection"] is not None:
        row["loss_selection"] = round(losses["selection"].item(), 5)
    if revisit is not None:
        # at high noise: blocks where first places come back into view (slow pans),
        # revisits of the sink, then of places only the mid bank holds
        # indices into `revisit`
        sink_at, mid_at = blocks["loop"] - blocks["revisit_from"], first_mid_recall - blocks["revisit_from"]
        if sink_at > 0:
            row["loss_revisit_entering_high"] = round(revisit[:sink_at].mean().item(), 5)
        row["loss_revisit_sink_high"] = round(revisit[sink_at:mid_at].mean().item(), 5)
        if len(revisit) > mid_at:
            row["loss_revisit_mid_high"] = round(revisit[mid_at:].mean().item(), 5)
    if losses["own"] is not None:
        row["loss_own_revisit_high"] = round(losses["own"].mean().item(), 5)
    return row


def _blocks(args, config, backbone) -> dict:
    """Block indices of the world's loop: its length, where the revisit batch's loss starts,
    and the first block whose revisit source (one camera loop back) has left the sink."""
    loop_blocks = LOOP_FRAMES // (config.block_frames * backbone.codec.temporal_factor)
    revisit_from = loop_blocks if args.revisit_from is None else args.revisit_from
    if not 0 < revisit_from <= loop_blocks:
        raise ValueError(f"--revisit-from {revisit_from}: allowed 1..{loop_blocks} (the loss must cover the sink's "
                         "revisits)")
    if args.own_revisit_batch and not loop_blocks < args.own_revisit_blocks <= 2 * loop_blocks:
        raise ValueError(f"--own-revisit-blocks {args.own_revisit_blocks}: allowed "
                         f"{loop_blocks + 1}..{2 * loop_blocks} (one loop of the model's own blocks, then revisits of "
                         "them)")
    return {"loop": loop_blocks, "revisit_from": revisit_from, "first_mid_recall": loop_blocks + config.sink_blocks}


def _backbone(args):
    backbone = load_embedded(args.out) if args.resume else build_embedded(args.seed)
    if args.add_camera_clock and backbone.clock is None:
        add_camera_clock(backbone)
    if args.restart_hr:
        # an HR branch grown far above an ordinary token's norm drowns the LR content;
        # restarting it makes compressed tokens begin as the LR branch's
        torch.manual_seed(args.seed)
        backbone.hr_compressor.restart()
    return backbone


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = _backbone(args)
    params, opt, ema = _optimizer(backbone, args)
    n_params = sum(p.numel() for p in params)

    def save(metadata):
        if ema is None:
            return save_embedded(backbone, args.out, metadata)
        raw = [p.detach().clone() for p in params]
        with torch.no_grad():
            torch._foreach_copy_(params, ema)
            save_embedded(backbone, args.out, metadata)
            torch._foreach_copy_(params, raw)

    config = EMBEDDED_CONFIG.replace(proportional_attention=args.proportional_attention)
    sampler = PackForcingSampler(backbone, config, seed=args.seed)
    blocks = _blocks(args, config, backbone)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    log, done = _open_log(args)
    start = last_ckpt = time.time()
    budget = args.minutes * 60
    step = 0
    print(json.dumps({"params": n_params, "config": config.to_dict(), "clip_blocks": args.clip_blocks}), flush=True)
    while time.time() - start < budget:
        # cosine decay over the time budget, short warm-up
        progress = (time.time() - start) / budget
        lr = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = lr * group["scale"]
        losses = _step_losses(sampler, args, rng, gen, blocks)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            # short warm-up, so early checkpoints are not dominated by the starting weights
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - min(args.ema, (1 + step) / (10 + step)))
        step += 1
        row = _curve_row(args, losses, blocks, done["steps"] + step, done["minutes"] + (time.time() - start) / 60, lr)
        log.write(json.dumps(row) + "\n")
        log.flush()  # a killed run keeps its curve up to the last step
        if step % 10 == 0:
            print(json.dumps(row), flush=True)
        if time.time() - last_ckpt > args.checkpoint_minutes * 60:
            save({"steps": row["step"], "minutes": row["minutes"], "params": n_params})
            last_ckpt = time.time()
    save({"steps": done["steps"] + step, "minutes": round(done["minutes"] + (time.time() - start) / 60, 2),
          "params": n_params})
    log.close()
    print(f"saved {args.out} after {step} steps", flush=True)


if __name__ == "__main__":
    main()
