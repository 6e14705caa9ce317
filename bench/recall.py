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
Prints JSON: per selection the per-block loss and the means over block ranges.
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


@torch.no_grad()
def probe(backbone, text, pixels, latent, selection: str, sigma: float, seed: int, cfg=EMBEDDED_CONFIG):
    """Per-block losses and, per block, whether the revisit source was attended (None: not in the bank)."""
    sampler = PackForcingSampler(backbone, cfg, seed=0)
    cache = sampler.cache
    gen = torch.Generator().manual_seed(seed)
    bf = cfg.block_frames
    frames_per_block = bf * backbone.codec.temporal_factor
    loop = LOOP_FRAMES // frames_per_block
    losses, hits = [], []
    for c in range(latent.shape[2] // bf):
        x0 = latent[:, :, c * bf : (c + 1) * bf]
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
        noise = torch.randn(x0.shape, generator=gen)
        x_t = (1 - sigma) * x0 + sigma * noise
        v = sampler._forward(x_t, torch.full((x0.shape[0],), sigma * cfg.num_train_timesteps), text, "denoise", frame_offset=c * bf)
        losses.append(((v - (noise - x0)) ** 2).mean().item())
        hits.append(source in cache.selected if source in bank else None)
        sampler.admit(sampler.write_block(c, x0, text), x0, pixels[:, :, c * frames_per_block : (c + 1) * frames_per_block], text)
    sampler.reset()
    return losses, hits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="assets/embedded")
    ap.add_argument("--batches", type=int, default=3, help="batches of 8 random clips")
    ap.add_argument("--sigma", type=float, default=0.7, help="noise level of every block (0 clean .. 1 noise)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--proportional-attention", action="store_true", help="for weights trained with it (v7)")
    args = ap.parse_args()
    if args.batches < 1 or not 0.0 < args.sigma <= 1.0:
        ap.error(f"--batches {args.batches} must be >= 1 and --sigma {args.sigma} in (0, 1]")
    backbone = load_embedded(args.weights)
    cfg = EMBEDDED_CONFIG.replace(proportional_attention=args.proportional_attention)
    rng = random.Random(args.seed)
    rows = {s: [] for s in SELECTIONS}
    hits = []
    for b in range(args.batches):
        prompts, pixels, latent = world_batch(rng, 8, 14, backbone.codec)
        with torch.no_grad():
            text = backbone.text_encoder(tokenize(prompts))
        for s in SELECTIONS:
            losses, h = probe(backbone, text, pixels, latent, s, args.sigma, args.seed + b, cfg)
            rows[s].append(losses)
            if s == "dynamic":
                hits += [x for x in h if x is not None]
    out = {"weights": args.weights, "proportional_attention": args.proportional_attention, "clips": 8 * args.batches, "sigma": args.sigma, "source_hit_rate": round(statistics.mean(hits), 3), "selections": {}}
    for s, runs in rows.items():
        per_block = [statistics.mean(col) for col in zip(*runs)]
        out["selections"][s] = {
            "per_block": [round(x, 4) for x in per_block],
            "new_1_7": round(statistics.mean(per_block[1:8]), 4),
            "sink_revisit_8_9": round(statistics.mean(per_block[8:10]), 4),
            "mid_revisit_10_13": round(statistics.mean(per_block[10:14]), 4),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
