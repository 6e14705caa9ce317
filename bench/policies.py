"""Per-block transformer time (denoising + cache write) of window / fifo / dynamic / full on the same
tiny model and run.

    python -m bench.policies --blocks 60 > bench/policies.json

Prints JSON: per policy the per-block seconds, the mean over the last third, and its
ratio to window (compare ratios within one run; these machines are noisy).
"""

import argparse
import json
import platform
import statistics

import torch

from packforcing.backbones.tiny import build_tiny_random
from packforcing.config import POLICIES as CONFIG_POLICIES
from packforcing.config import PackForcingConfig
from packforcing.events import Block
from packforcing.sampler import PackForcingSampler

# the paper's efficiency rows (random is dynamic's chance baseline, same memory)
POLICIES = tuple(p for p in CONFIG_POLICIES if p != "random")
BENCH_TRANSFORMER = dict(num_attention_heads=2, attention_head_dim=64, ffn_dim=512, num_layers=4)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=60)
    ap.add_argument("--size", type=int, default=128, help="pixel width/height of the tiny model")
    ap.add_argument("--top-k", type=int, default=16)
    ap.add_argument("--mid-capacity", type=int, default=24)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    # The embedded model's transformer shape (4 layers, width 128) with random weights:
    # big enough that the transformer, not Python bookkeeping, sets the time.
    backbone = build_tiny_random(width=args.size, height=args.size, transformer_kwargs=BENCH_TRANSFORMER)
    out = {"device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "blocks": args.blocks, "policies": {}}
    # Interleaved: one block of each policy in turn, so machine noise hits all alike.
    streams = {}
    for policy in POLICIES:
        cfg = PackForcingConfig(policy=policy, top_k=args.top_k, mid_capacity=args.mid_capacity)
        streams[policy] = (e
                           for e in PackForcingSampler(backbone, cfg, seed=0).stream("benchmark", args.blocks,
                                                                                     "tiny-random")
                           if isinstance(e, Block))
    rows = {policy: [] for policy in POLICIES}
    for _ in range(args.blocks):
        for policy, stream in streams.items():
            rows[policy].append(next(stream))
    for policy in POLICIES:
        seconds = [e.timings["transformer"] for e in rows[policy]]  # denoise + cache write: what the policy changes
        totals = [e.seconds for e in rows[policy]]
        tail = seconds[-args.blocks // 3 :]
        out["policies"][policy] = {
            "mean_last_third_s": statistics.mean(tail),
            "first_third_s": statistics.mean(seconds[: args.blocks // 3]),
            "kv_bytes_last": rows[policy][-1].kv_bytes,
            "context_tokens_last": rows[policy][-1].context_tokens,
            "total_with_decode_last_third_s": statistics.mean(totals[-args.blocks // 3 :]),
            "per_block_s": [round(s, 4) for s in seconds],
        }
    base = out["policies"]["window"]["mean_last_third_s"]
    for p in POLICIES:
        stats = out["policies"][p]
        stats["ratio_to_window"] = stats["mean_last_third_s"] / base
        stats["growth_last_vs_first_third"] = stats["mean_last_third_s"] / stats["first_third_s"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
