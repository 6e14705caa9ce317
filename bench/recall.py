"""Does the embedded model recall from the mid bank? A teacher-forced probe.

    python -m bench.recall --weights assets/embedded --batches 3 > bench/recall.json

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

import torch

from packforcing.embedded.data import world_batch
from packforcing.embedded.model import EMBEDDED_CONFIG, load_embedded
from packforcing.embedded.recall import SELECTIONS, probe, ranges, sample_error, with_foreign_sources
from packforcing.embedded.vocab import tokenize
from packforcing.embedded.world import LOOP_FRAMES


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="assets/embedded")
    ap.add_argument("--batches", type=int, default=3, help="batches of 8 random clips")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.7, 0.95],
                    help="noise levels of the teacher-forced probe (0 clean .. 1 noise)")
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
            rows[sigma]["oracle_swapped"].append(probe(backbone, text, foreign_pixels, foreign_latent, "oracle", sigma,
                                                       args.seed + b, cfg, truth=latent)[0])
        held, other = latent, latent.roll(1, dims=0)  # the other clip's block c shows its source's place
        sampled = {}
        for name, (px, lat) in (("true", (pixels, latent)), ("swapped", (foreign_pixels, foreign_latent))):
            sampled[name] = {}
            probe(backbone, text, px, lat, "dynamic", args.sigmas[0], args.seed + b, cfg, sample_from=first,
                  samples=sampled[name])
        margin, own = [], []
        for c in sorted(sampled["true"]):
            t, f = sampled["true"][c], sampled["swapped"][c]
            margin.append(0.5
                          * ((sample_error(t, other, c, bf) - sample_error(t, held, c, bf))
                             + (sample_error(f, held, c, bf) - sample_error(f, other, c, bf))))
            own.append(0.5 * (sample_error(t, held, c, bf) + sample_error(f, other, c, bf)))
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
