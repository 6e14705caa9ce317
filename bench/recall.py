"""Does the embedded model recall from the mid bank? A teacher-forced probe.

    python bench/recall.py --weights assets/embedded --batches 3 > bench/recall.json

Streams 14-block world clips (1.75 camera loops) through the engine with the true past
in the cache, noises each block to one level and measures the flow loss per block,
under four selections of the mid bank:
- dynamic: the model's own top-k;
- oracle:  the revisit source (the block one loop back) plus the newest others;
- anti:    the newest top-k blocks other than the source;
- window:  no mid block at all.
Blocks 8-9 revisit the sink, blocks 10-13 places only the mid bank holds. If the model
reads its compressed memory, oracle < anti on blocks 10-13; if its selection finds it,
dynamic's hit rate (source selected) is high and dynamic ~ oracle.
A fifth row, `oracle_swapped`, attends the same blocks after the sink and every
revisit source (blocks 0-5) were replaced by another clip's: where it costs more than
`oracle`, the model used what the sink or the source showed.

The losses are measured at each `--sigmas` level. A model can recall at moderate noise,
where the block's own content is half visible and can be matched against memory,
and not at all near pure noise, where sampling's first Euler steps decide the layout.
So `sampled` goes one step further: with the true past in the cache, and again with
the sink and sources swapped, each revisit block (8-13) is sampled from noise as the
app does (the model's schedule, guidance and dynamic selection). Its `recall_margin`
is how much closer (mean squared error on the latent) a sample is to the place the
cache held than to the other clip's place, averaged over the two runs: the prompt and
the true blocks 6-7 pull both runs' samples towards the truth alike and cancel, and so
does blur, which a plain error against the truth would reward. Recall at sampling
shows as a positive margin.
Prints JSON.
"""

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from packforcing.backbones.embedded import EMBEDDED_CONFIG, load_embedded
from packforcing.sampler import PackForcingSampler
from packforcing.selection import select_blocks
from packforcing.train import world_batch
from packforcing.world.scene import LOOP_FRAMES
from packforcing.world.vocab import tokenize

SELECTIONS = ("dynamic", "oracle", "anti", "window")


def with_foreign_sources(pixels, latent, loop_blocks: int, block_frames: int, frames_per_block: int):
    """The clips with their first `loop_blocks - 2` blocks (the sink and the sources of
    blocks loop..loop+5) taken from another clip of the batch (clip i gets clip i-1's,
    `roll(1)`); the blocks just before a revisit stay true."""
    n = loop_blocks - 2
    latent, pixels = latent.clone(), pixels.clone()
    latent[:, :, : n * block_frames] = latent[:, :, : n * block_frames].roll(1, dims=0)
    pixels[:, :, : n * frames_per_block] = pixels[:, :, : n * frames_per_block].roll(1, dims=0)
    return pixels, latent


@torch.no_grad()
def probe(backbone, text, pixels, latent, selection: str, sigma: float, seed: int, cfg=EMBEDDED_CONFIG, truth=None, sample_from: int | None = None,
          samples: dict | None = None):
    """Per-block losses and, per block, whether the revisit source was attended (None: not in the bank).

    The cache is written from `latent` / `pixels`; losses are against `truth` (default:
    `latent`). From block `sample_from` on, each block is sampled from noise with the
    sampler (the history stays the given one) and its squared error against the truth is
    reported instead of a flow loss (`samples`, when given, collects them by block)."""
    truth = latent if truth is None else truth
    sampler = PackForcingSampler(backbone, cfg, seed=seed)
    cache = sampler.cache
    gen = torch.Generator().manual_seed(seed)
    bf = cfg.block_frames
    frames_per_block = bf * backbone.codec.temporal_factor
    loop = LOOP_FRAMES // frames_per_block
    losses, hits = [], []
    for c in range(latent.shape[2] // bf):
        x0, target = latent[:, :, c * bf : (c + 1) * bf], truth[:, :, c * bf : (c + 1) * bf]
        cache.begin_block(c, float(c * bf))
        bank, source = list(cache.mid), c - loop
        done = {m: 0.0 for m in bank}  # marks the selection as set, so layer 0 does not rescore
        if selection == "oracle" and source in bank:
            cache.set_selection(sorted([m for m in bank if m != source][-(cfg.top_k - 1):] + [source]), done)
        elif selection == "anti" and source in bank:
            cache.set_selection([m for m in bank if m != source][-cfg.top_k:], done)
        elif selection == "window" and bank:
            cache.set_selection([], done)
        elif not cache.selection_pending:
            cache.set_selection(select_blocks(bank, cfg, generator=sampler.selection_rng))
        if sample_from is not None and c >= sample_from:
            sample = sampler.denoise_block(c, text)
            losses.append(_err(sample, truth, c, bf))
            if samples is not None:
                samples[c] = sample
        else:
            noise = torch.randn(x0.shape, generator=gen)
            x_t = (1 - sigma) * target + sigma * noise
            v = sampler._forward(x_t, torch.full((x0.shape[0],), sigma * cfg.num_train_timesteps), text, "denoise", frame_offset=c * bf)
            losses.append(((v - (noise - target)) ** 2).mean().item())
        hits.append(source in cache.selected if source in bank else None)
        sampler.admit(sampler.write_block(c, x0, text), x0, pixels[:, :, c * frames_per_block : (c + 1) * frames_per_block], text)
    sampler.reset()
    return losses, hits


def _err(sample, clips, block: int, block_frames: int) -> float:
    """Mean squared error of a sampled block against block `block` of `clips`."""
    return ((sample - clips[:, :, block * block_frames : (block + 1) * block_frames]) ** 2).mean().item()


def ranges(per_block):
    return {
        "new_1_7": round(statistics.mean(per_block[1:8]), 4),
        "sink_revisit_8_9": round(statistics.mean(per_block[8:10]), 4),
        "mid_revisit_10_13": round(statistics.mean(per_block[10:14]), 4),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="assets/embedded")
    ap.add_argument("--batches", type=int, default=3, help="batches of 8 random clips")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.7, 0.95], help="noise levels of the teacher-forced probe (0 clean .. 1 noise)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--proportional-attention", action="store_true", help="for weights trained with it (v7)")
    args = ap.parse_args()
    if args.batches < 1 or not all(0.0 < s <= 1.0 for s in args.sigmas):
        ap.error(f"--batches {args.batches} must be >= 1 and every --sigmas value in (0, 1], got {args.sigmas}")
    backbone = load_embedded(args.weights)
    cfg = EMBEDDED_CONFIG.replace(proportional_attention=args.proportional_attention)
    bf, fpb = cfg.block_frames, cfg.block_frames * backbone.codec.temporal_factor
    first = LOOP_FRAMES // fpb  # the first revisit block
    rows = {sigma: {s: [] for s in (*SELECTIONS, "oracle_swapped")} for sigma in args.sigmas}
    margins, own_errors = [], []
    hits = []
    rng = random.Random(args.seed)
    for b in range(args.batches):
        prompts, pixels, latent = world_batch(rng, 8, 14, backbone.codec)
        foreign_pixels, foreign_latent = with_foreign_sources(pixels, latent, LOOP_FRAMES // fpb, bf, fpb)
        with torch.no_grad():
            text = backbone.text_encoder(tokenize(prompts))
        for sigma in args.sigmas:
            for s in SELECTIONS:
                losses, h = probe(backbone, text, pixels, latent, s, sigma, args.seed + b, cfg)
                rows[sigma][s].append(losses)
                if s == "dynamic" and sigma == args.sigmas[0]:
                    hits += [x for x in h if x is not None]
            rows[sigma]["oracle_swapped"].append(probe(backbone, text, foreign_pixels, foreign_latent, "oracle", sigma, args.seed + b, cfg, truth=latent)[0])
        held, other = latent, latent.roll(1, dims=0)  # the other clip's block c shows its source's place
        sampled = {}
        for name, (px, lat) in (("true", (pixels, latent)), ("swapped", (foreign_pixels, foreign_latent))):
            sampled[name] = {}
            probe(backbone, text, px, lat, "dynamic", args.sigmas[0], args.seed + b, cfg, sample_from=first, samples=sampled[name])
        margin, own = [], []
        for c in sorted(sampled["true"]):
            t, f = sampled["true"][c], sampled["swapped"][c]
            margin.append(0.5 * ((_err(t, other, c, bf) - _err(t, held, c, bf)) + (_err(f, held, c, bf) - _err(f, other, c, bf))))
            own.append(0.5 * (_err(t, held, c, bf) + _err(f, other, c, bf)))
        margins.append(margin)
        own_errors.append(own)
    out = {"weights": args.weights, "proportional_attention": args.proportional_attention, "clips": 8 * args.batches,
           "source_hit_rate": round(statistics.mean(hits), 3), "by_sigma": {}, "sampled": {}}
    for sigma, table in rows.items():
        out["by_sigma"][str(sigma)] = {}
        for s, runs in table.items():
            per_block = [statistics.mean(col) for col in zip(*runs)]
            means = ranges(per_block)
            if s == "oracle_swapped":  # blocks 1-7 are scored against a truth their foreign past contradicts
                means.pop("new_1_7")
            out["by_sigma"][str(sigma)][s] = {"per_block": [round(x, 4) for x in per_block], **means}
    for name, table in (("recall_margin", margins), ("error_to_held_past", own_errors)):
        per_block = [statistics.mean(col) for col in zip(*table)]
        out["sampled"][name] = {f"per_block_{first}_on": [round(x, 4) for x in per_block],
                                "sink_revisit_8_9": round(statistics.mean(per_block[: cfg.sink_blocks]), 4),
                                "mid_revisit_10_13": round(statistics.mean(per_block[cfg.sink_blocks :]), 4)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
