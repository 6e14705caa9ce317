"""Streaming speed on one GPU: Wan2.1-T2V-1.3B architecture at 832x480, 16 FPS, eager and fast path.

    python -m bench.gpu --random --out bench/gpu.json                        # on a GPU: about 7 min on an H200
    python -m bench.gpu --tiny --device cpu --seconds 6 --eager-seconds 6    # smoke test on a CPU

Sections, in this order (each printed to stderr as soon as measured; --deadline-s skips
what would not fit, and the JSON says what was skipped):
  eager          dynamic, uncompiled, decode inline (the path measured before): FPS, and
                 the frames of its first blocks for the output check
  compile        the fast path's compile and warm-up, timed apart from steady-state speed
  fast           per policy (dynamic and window, then the breakdown, then the rest),
                 compiled, decode on a side stream: FPS with decode, first frame, KV,
                 peak memory, new compiled graphs (must be 0), PSNR vs eager
  breakdown      dynamic, compiled, synchronised per stage: seconds per block for
                 transformer, selection, compression, decode, and the rotation tables;
                 host syncs per steady-state block (CUDA's sync debug mode, or on a CPU
                 the host's reads of tensor values)
Random weights have the real shapes, so time and memory are the real model's (the JSON
says which weights were used).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

from bench.gpu_probes import PROMPT, breakdown, decode_layout, psnr, rotation_cost, sdpa_report, sync
from packforcing.backbone import Backbone, WanVAECodec
from packforcing.config import POLICIES as CONFIG_POLICIES
from packforcing.config import PackForcingConfig
from packforcing.events import Block, Frames
from packforcing.fastpath import FastPath, prefer_sdpa
from packforcing.sampler import PackForcingSampler, blocks_for

# the paper's efficiency rows (random is dynamic's chance baseline, same memory)
POLICIES = tuple(p for p in CONFIG_POLICIES if p != "random")
PAPER_A100 = {  # PackForcing paper, efficiency table (A100 80 GB, 120 s at 832x480)
    "window": {"fps": 18, "kv_gb": 3.1, "peak_gb": 24},
    "fifo": {"fps": 16, "kv_gb": 4.0, "peak_gb": 26},
    "dynamic": {"fps": 15, "kv_gb": 4.2, "peak_gb": 27},
    "full": {"fps": None, "kv_gb": 138, "peak_gb": "OOM"},
}
PEERS = {  # FPS as each project reports it, on its own GPU (whether decode is included varies)
    "PackForcing (paper)": {"gpu": "H200", "fps": 16},
    "LongLive": {"gpu": "H100", "fps": 20.7, "fps_fp8": 24.8},
    "Self-Forcing": {"gpu": "H100", "fps": 17},
    "Hybrid Forcing": {"gpu": "H100", "fps": 29.5},
}
SECTIONS = ("eager", "breakdown")
CHECKED_BLOCKS = 4  # blocks whose frames the fast path must reproduce (PSNR vs eager)


def random_backbone(device, dtype, tiny: bool) -> Backbone:
    """Real shapes, random weights: the transformer, Wan's VAE, a fixed random text embedding."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from packforcing.backbones.tiny import TINY_TRANSFORMER, TINY_VAE
    from packforcing.backbones.wan_checkpoint import WAN_1_3B_CONFIG, apply_original_numerics

    torch.manual_seed(0)
    with torch.device(device):
        # the same numerics as the real weights' loader (bf16, float64 timestep embedding)
        shape = TINY_TRANSFORMER if tiny else WAN_1_3B_CONFIG
        transformer = apply_original_numerics(WanTransformer3DModel(**shape).to(dtype)).eval().requires_grad_(False)
        vae = AutoencoderKLWan(**(TINY_VAE if tiny else {})).to(dtype).eval().requires_grad_(False)  # as load_wan
    text_dim = transformer.config.text_dim
    text = torch.randn(1, 16 if tiny else 512, text_dim, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    width, height = (64, 64) if tiny else (832, 480)
    return Backbone(name="wan-1.3b (random weights)" if not tiny else "tiny-random", transformer=transformer,
                    codec=WanVAECodec(vae), encode_prompt=lambda prompt: text, width=width, height=height, fps=16)


def load_backbone(args) -> tuple[Backbone, str]:
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    if not args.tiny and not args.random:
        from packforcing.backbones.wan import load_wan, weights_available

        if weights_available():
            return load_wan(device=args.device, dtype=dtype), "real (Wan2.1-T2V-1.3B + Self-Forcing DMD)"
    return random_backbone(args.device, dtype,
                           args.tiny), "random (real architecture and size)" if not args.tiny else "random (tiny)"


def graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def stream_run(backbone, config, num_blocks, device, decode_ahead: bool, keep_frames: int = 0) -> dict:
    """One streamed video: FPS with decode, first frame, KV, peak memory, block walls."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    frames, first_frame, last, kept, walls, graphs_before = 0, None, None, [], [], graphs()
    sync(device)
    start = previous = time.perf_counter()
    for event in PackForcingSampler(backbone, config, seed=0, decode_ahead=decode_ahead).stream(PROMPT, num_blocks,
                                                                                                backbone.name):
        if isinstance(event, Frames):
            frames += event.frames.shape[0]  # on the host: its decode has finished
            first_frame = first_frame or time.perf_counter() - start
            if event.block < keep_frames:
                kept.append(event.frames)
        elif isinstance(event, Block):
            now = time.perf_counter()
            walls.append(now - previous)
            previous, last = now, event
    sync(device)
    total = time.perf_counter() - start
    steady = walls[len(walls) // 2:]  # the bounded context is reached well before half of a long run
    return {
        "frames": frames, "video_seconds": frames / backbone.fps, "wall_s": total,
        "fps_with_decode": frames / total,
        "fps_steady_half": 16 * len(steady) / sum(steady) if steady else None,  # 16 frames per full block
        "first_frame_s": first_frame, "kv_gb": last.kv_bytes / 1e9, "context_tokens_last": last.context_tokens,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
        "new_compiled_graphs": graphs() - graphs_before,
        "_frames": kept, "_walls": walls,
    }


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="video per policy on the fast path")
    ap.add_argument("--eager-seconds", type=float, default=20.0, help="video of the eager dynamic baseline (0 skips)")
    ap.add_argument("--policies", default="dynamic,window,fifo")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="which of " + ", ".join(SECTIONS) + " to run (fast always runs)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend: inductor | aot_eager")
    ap.add_argument("--mode", default="default",
                    help="default | reduce-overhead (CUDA graphs) | max-autotune-no-cudagraphs")
    ap.add_argument("--sdpa", default="fastest", help="fastest (timed here) | auto | cudnn | flash | efficient")
    ap.add_argument("--deadline-s", type=float, default=450.0, help="skip sections that would end after this")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--random", action="store_true", help="random weights even if the real ones are cached")
    ap.add_argument("--tiny", action="store_true", help="tiny random model (a smoke test of this script)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA GPU here (use --tiny --device cpu for a smoke test)")
    for name, given, allowed in (("policies", args.policies, POLICIES), ("sections", args.sections, SECTIONS)):
        unknown = [p for p in given.split(",") if p not in allowed]
        if unknown:
            ap.error(f"--{name} {','.join(unknown)}: allowed {', '.join(allowed)}")
    args.sections = set(args.sections.split(","))
    return args


def report(out: dict, key: str, value, path=None) -> None:
    """Keep a section's result, print it and rewrite the JSON at once: a run cut short
    keeps what it measured."""
    out[key] = {k: v for k, v in value.items() if not k.startswith("_")} if isinstance(value, dict) else value
    print(json.dumps({key: out[key]}), file=sys.stderr, flush=True)
    if path:
        Path(path).write_text(json.dumps(out, indent=1) + "\n")


def guarded(out: dict, name: str, fn, *args):
    """Run one section; if it fails, record why and go on: the GPU run is one prepared
    call with no time for a second."""
    try:
        return fn(*args)
    except Exception as e:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        out.setdefault("errors", {})[name] = f"{type(e).__name__}: {str(e)[:400]}"
        print(json.dumps({"error": {name: out["errors"][name]}}), file=sys.stderr, flush=True)
        return None


def main(argv=None):
    args = parse(argv)
    # read at the first CUDA allocation, so set before the model is built
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    t_start = time.perf_counter()
    backbone, weights = load_backbone(args)
    # the tiny smoke test reaches the bounded context in a few blocks
    config = PackForcingConfig(top_k=2, mid_capacity=3) if args.tiny else PackForcingConfig()
    num_blocks = blocks_for(args.seconds, backbone, config)
    out = {"gpu": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "weights": weights,
           "resolution": [backbone.width, backbone.height], "dtype": str(backbone.dtype), "torch": torch.__version__,
           "seconds": args.seconds, "blocks": num_blocks, "config": config.to_dict(), "paper_a100": PAPER_A100,
           "peers": PEERS, "fast_path": {"backend": args.backend, "mode": args.mode}, "skipped": [], "policies": {}}
    rate = {}  # wall seconds per block, as measured, to decide what still fits

    def fits(name: str, blocks: int, per_block: float, at_least: int | None = None) -> int:
        """How many of `blocks` end before the deadline (all, or at least `at_least`), else 0."""
        affordable = int((args.deadline_s - (time.perf_counter() - t_start)) / per_block)
        if affordable >= (blocks if at_least is None else min(blocks, at_least)):
            return min(blocks, affordable)
        out["skipped"].append(name)
        print(json.dumps({"skipped": name}), file=sys.stderr, flush=True)
        return 0

    report(out, "setup_s", time.perf_counter() - t_start, args.out)
    report(out, "sdpa", guarded(out, "sdpa", sdpa_report, backbone, config, args.device) or {}, args.out)
    eager = guarded(out, "eager", _eager, args, backbone, config, out, rate)
    with contextlib.ExitStack() as held:  # the SDPA preference the fast path runs under
        guarded(out, "compile", _compile, args, backbone, config, out, held)
        policies = args.policies.split(",")
        rows = _fast_policies(args, policies[:2], backbone, config, num_blocks, eager, out, fits, rate)
        # the first block at the bounded context
        steady_from = config.sink_blocks + config.recent_blocks + config.top_k + 1
        if "breakdown" in args.sections and fits("breakdown", steady_from + 4, rate.get("fast", 1.0) * 2):
            report(out, "breakdown_dynamic",
                   guarded(out, "breakdown", breakdown, backbone, config, steady_from + 4, steady_from, args.device)
                   or {}, args.out)
            report(out, "rotation", guarded(out, "rotation", rotation_cost, backbone, config, args.device) or {},
                   args.out)
        rows |= _fast_policies(args, policies[2:], backbone, config, num_blocks, eager, out, fits, rate)
        summarise(out, rows)
        out["total_s"] = time.perf_counter() - t_start
        report(out, "total_s", out["total_s"], args.out)
    print(json.dumps(out, indent=1))


def _eager(args, backbone, config, out, rate) -> dict | None:
    """The path measured before: dynamic, uncompiled, decode inline."""
    if "eager" not in args.sections or not args.eager_seconds:
        return None
    blocks = blocks_for(args.eager_seconds, backbone, config)
    stream_run(backbone, config, 2, args.device, False)  # warm-up: kernels, allocator
    eager = stream_run(backbone, config, blocks, args.device, False, CHECKED_BLOCKS)
    report(out, "eager_dynamic", eager, args.out)
    rate["eager"] = eager["wall_s"] / blocks
    return eager


def _compile(args, backbone, config, out, held: contextlib.ExitStack) -> None:
    """The fast path's compile and warm-up, timed apart from its steady-state speed.
    `held` keeps the SDPA preference for the runs that follow."""
    choice = out["sdpa"].get("fastest") if args.sdpa == "fastest" else args.sdpa
    if choice and choice != "auto":
        held.enter_context(prefer_sdpa(choice))
    out["fast_path"]["sdpa_first"] = choice or "auto"
    channels_last = False
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # as the fast path sets it: a block's decode shapes never change
        layout = decode_layout(backbone, config, args.device)
        channels_last = layout["channels_last_s"] < layout["contiguous_s"]
        report(out, "decode_layout", layout | {"channels_last": channels_last}, args.out)
    if args.device == "cuda":  # a graph the compiler fails on runs eagerly instead (counted in compile.frames)
        torch._dynamo.config.suppress_errors = True
    from torch._dynamo.utils import counters

    graphs_before, frames_before = graphs(), dict(counters["frames"])  # counters are per process
    t0 = time.perf_counter()
    FastPath(compile=True, backend=args.backend, mode=args.mode, decode_ahead=True,
             channels_last_decode=channels_last).apply(backbone)
    warm = config.sink_blocks + config.recent_blocks + 2  # reaches both compiled shapes (block, compressed block)
    stream_run(backbone, config, warm, args.device, True)
    frames = {k: v - frames_before.get(k, 0) for k, v in counters["frames"].items()}
    report(out, "compile", {"compile_and_warmup_s": time.perf_counter() - t0, "warmup_blocks": warm,
                            "compiled_graphs": graphs() - graphs_before, "frames": frames}, args.out)


def _fast_policies(args, policies, backbone, config, num_blocks, eager, out, fits, rate) -> dict:
    """Per policy, compiled, decode on a side stream: the steady-state rows."""
    rows = {}
    for policy in policies:
        if policy == "full" and args.device == "cuda" and args.seconds > 60:
            out["skipped"].append("full (out of memory before 120 s on 80 GB; measured in README)")
            continue
        # a policy that would not end in time runs shorter, if past a full bank
        full_bank = config.sink_blocks + config.recent_blocks + config.mid_capacity + 4
        blocks = fits(policy, num_blocks, rate.get("fast", rate.get("eager", 1.0)), at_least=full_bank)
        if not blocks:
            continue
        row = guarded(out, policy, stream_run, backbone, config.replace(policy=policy), blocks, args.device, True,
                      CHECKED_BLOCKS if policy == "dynamic" else 0)
        if row is None:
            continue
        rate["fast"] = row["wall_s"] / blocks
        if eager is not None and row["_frames"]:
            row["psnr_vs_eager_db"] = [psnr(a, b) for a, b in zip(row["_frames"], eager["_frames"])]
        rows[policy] = row
        report(out["policies"], policy, row)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return rows


def summarise(out: dict, rows: dict) -> None:
    if "dynamic" in rows and "window" in rows:
        out["dynamic_vs_window_fps"] = rows["dynamic"]["fps_with_decode"] / rows["window"]["fps_with_decode"]
    if "dynamic" in rows and "eager_dynamic" in out:
        # over the same first blocks (early blocks attend less, and the eager run is shorter)
        eager, walls = out["eager_dynamic"], rows["dynamic"]["_walls"]
        blocks = round((eager["frames"] - 13) / 16) + 1
        fast_fps = eager["frames"] / sum(walls[:blocks])
        out["fast_vs_eager_fps_same_blocks"] = {"blocks": blocks, "eager_fps": eager["fps_with_decode"],
                                                "fast_fps": fast_fps,
                                                "ratio": fast_fps / eager["fps_with_decode"]}
    dyn = out["policies"].get("dynamic")
    if dyn:
        out["target"] = {"fps_with_decode>=30": dyn["fps_with_decode"] >= 30,
                         "first_frame<=1s": dyn["first_frame_s"] <= 1.0,
                         "kv<=4.3GB": dyn["kv_gb"] <= 4.3,
                         "peak<=20GB": dyn["peak_gpu_gb"] is not None and dyn["peak_gpu_gb"] <= 20,
                         "dynamic>=0.95x_window": out.get("dynamic_vs_window_fps", 0) >= 0.95,
                         "no_recompiles": all(r["new_compiled_graphs"] == 0 for r in rows.values())}


if __name__ == "__main__":
    main()
