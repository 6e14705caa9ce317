"""The paper's efficiency table on one GPU: Wan2.1-T2V-1.3B architecture at 832x480, 16 FPS.

    python -m bench.gpu --seconds 30 > bench/gpu.json             # real weights if cached, else random
    python -m bench.gpu --tiny --device cpu --seconds 2           # smoke test of this script on a CPU

Per policy (window, fifo, dynamic, full), on the same prompt and seed:
  fps_with_decode      video frames per wall-clock second, VAE decode included
  fps_without_decode   the same without the (synchronised) VAE decode time
  kv_bytes             K/V held by the cache at the end; the paper's column
  peak_gpu_gb          torch.cuda.max_memory_allocated over the run (weights included), and
                       apart: while generating (transformer, cache, compression), while decoding
  first_frame_s        from the start of the stream to the first decoded frame
Then `full` is run on until it runs out of memory (or --full-seconds of video), which is
the paper's "OOM" cell; the memory arithmetic's prediction is printed beside it.
Random weights have the real shapes, so time and memory are the real model's; say
which weights were used when quoting the numbers (the JSON does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from packforcing.backbone import Backbone, WanVAECodec
from packforcing.config import POLICIES as CONFIG_POLICIES
from packforcing.config import PackForcingConfig
from packforcing.events import Block, Frames
from packforcing.memory import memory_table
from packforcing.sampler import PackForcingSampler, blocks_for

# the paper's efficiency rows (random is dynamic's chance baseline, same memory)
POLICIES = tuple(p for p in CONFIG_POLICIES if p != "random")
PAPER_A100 = {  # PackForcing paper, efficiency table (A100 80 GB, 120 s at 832x480)
    "window": {"fps": 18, "kv_gb": 3.1, "peak_gb": 24},
    "fifo": {"fps": 16, "kv_gb": 4.0, "peak_gb": 26},
    "dynamic": {"fps": 15, "kv_gb": 4.2, "peak_gb": 27},
    "full": {"fps": None, "kv_gb": 138, "peak_gb": "OOM"},
}
PROMPT = "A red fox trots through fresh snow in a birch forest at dawn, cinematic, tracking shot"


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class TimedCodec:
    """The backbone's codec with every streaming decode synchronised and timed, and its
    peak GPU memory kept apart from the generator's (the two never overlap in time)."""

    def __init__(self, codec, device):
        self.codec, self.device, self.seconds = codec, device, 0.0
        self.cuda = torch.device(device).type == "cuda"
        self.decode_peak = self.generate_peak = 0

    def __getattr__(self, name):
        return getattr(self.codec, name)

    def mark_generate_peak(self) -> None:
        if self.cuda:
            self.generate_peak = max(self.generate_peak, torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()

    def stream_decoder(self):
        inner, timed = self.codec.stream_decoder(), self

        class Decoder:
            def decode_next(self, latent):
                sync(timed.device)
                timed.mark_generate_peak()
                t0 = time.perf_counter()
                out = inner.decode_next(latent)
                sync(timed.device)
                timed.seconds += time.perf_counter() - t0
                if timed.cuda:
                    timed.decode_peak = max(timed.decode_peak, torch.cuda.max_memory_allocated())
                    torch.cuda.reset_peak_memory_stats()
                return out

        return Decoder()


def random_backbone(device, dtype, tiny: bool) -> Backbone:
    """Real shapes, random weights: the transformer, Wan's VAE, a fixed random text embedding."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from packforcing.backbones.tiny import TINY_TRANSFORMER, TINY_VAE
    from packforcing.backbones.wan_checkpoint import WAN_1_3B_CONFIG, apply_original_numerics

    torch.manual_seed(0)
    with torch.device(device):
        # the same numerics as the real weights' loader (bf16, float64 timestep embedding)
        transformer = apply_original_numerics(WanTransformer3DModel(**(TINY_TRANSFORMER if tiny else WAN_1_3B_CONFIG)).to(dtype)).eval().requires_grad_(False)
        vae = AutoencoderKLWan(**(TINY_VAE if tiny else {})).to(dtype).eval()  # as load_wan: the generator's dtype
    text_dim = transformer.config.text_dim
    text = torch.randn(1, 16 if tiny else 512, text_dim, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    width, height = (128, 128) if tiny else (832, 480)
    return Backbone(name="wan-1.3b (random weights)" if not tiny else "tiny-random", transformer=transformer,
                    codec=WanVAECodec(vae), encode_prompt=lambda prompt: text, width=width, height=height, fps=16)


def load_backbone(args) -> tuple[Backbone, str]:
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    if not args.tiny and not args.random:
        from packforcing.backbones.wan import load_wan, weights_available

        if weights_available():
            return load_wan(device=args.device, dtype=dtype), "real (Wan2.1-T2V-1.3B + Self-Forcing DMD)"
    return random_backbone(args.device, dtype, args.tiny), "random (real architecture and size)" if not args.tiny else "random (tiny)"


def run_policy(backbone: Backbone, config: PackForcingConfig, num_blocks: int, device) -> dict:
    timed = TimedCodec(backbone.codec, device)
    codec, backbone.codec = backbone.codec, timed
    if timed.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    frames, first_frame, blocks = 0, None, []
    try:
        sync(device)
        start = time.perf_counter()
        for event in PackForcingSampler(backbone, config, seed=0).stream(PROMPT, num_blocks, backbone.name):
            if isinstance(event, Frames):
                frames += event.frames.shape[0]  # .cpu() in the sampler has synchronised
                first_frame = first_frame or time.perf_counter() - start
            elif isinstance(event, Block):
                blocks.append(event)
        sync(device)
        total = time.perf_counter() - start
    except torch.cuda.OutOfMemoryError:
        # `full` at this length: the row says where, and the next policy still runs
        torch.cuda.empty_cache()
        frames_per_block = config.block_frames * codec.temporal_factor
        return {"oom": True, "oom_at_block": len(blocks), "oom_at_video_seconds": len(blocks) * frames_per_block / backbone.fps,
                "kv_gb_before_oom": blocks[-1].kv_bytes / 1e9 if blocks else 0.0}
    finally:
        backbone.codec = codec
    timed.mark_generate_peak()
    gb = lambda n: None if not timed.cuda else n / 1e9  # noqa: E731
    return {
        "frames": frames,
        "video_seconds": frames / backbone.fps,
        "fps_with_decode": frames / total,
        "fps_without_decode": frames / (total - timed.seconds),
        "decode_seconds": timed.seconds,
        "first_frame_s": first_frame,
        "kv_bytes": blocks[-1].kv_bytes,
        "kv_gb": blocks[-1].kv_bytes / 1e9,
        "context_tokens_last": blocks[-1].context_tokens,
        "peak_gpu_gb": gb(max(timed.generate_peak, timed.decode_peak)),
        "peak_gpu_gb_generating": gb(timed.generate_peak),  # weights, cache, transformer passes, compression
        "peak_gpu_gb_decoding": gb(timed.decode_peak),  # weights, cache, the VAE decode of one block
    }


def full_until_oom(backbone: Backbone, config: PackForcingConfig, max_blocks: int, device) -> dict:
    """Blocks of `full` until CUDA runs out of memory; the paper's OOM cell."""
    done, kv = 0, 0
    frames_per_block = config.block_frames * backbone.codec.temporal_factor
    try:
        for event in PackForcingSampler(backbone, config.replace(policy="full"), seed=0).stream(PROMPT, max_blocks, backbone.name):
            if isinstance(event, Block):
                done = event.block + 1
                kv = event.kv_bytes
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"oom": True, "oom_at_block": done, "oom_at_video_seconds": done * frames_per_block / backbone.fps, "kv_gb_before_oom": kv / 1e9}
    return {"oom": False, "blocks": done, "kv_gb_at_end": kv / 1e9}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="video length per policy (the KV column is flat after ~10 s except for full)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--full-seconds", type=float, default=120.0, help="run full this far, or until OOM (0 skips)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--random", action="store_true", help="random weights even if the real ones are cached")
    ap.add_argument("--tiny", action="store_true", help="tiny random model (a smoke test of this script)")
    args = ap.parse_args(argv)
    # blocks of growing context (full) fragment the allocator's fixed segments; read at
    # the first CUDA allocation, so set before the model is built
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA GPU here (use --tiny --device cpu for a smoke test)")
    policies = args.policies.split(",")
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        ap.error(f"--policies {','.join(unknown)}: allowed {', '.join(POLICIES)}")

    backbone, weights = load_backbone(args)
    config = PackForcingConfig()
    num_blocks = blocks_for(args.seconds, backbone, config)
    out = {
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "weights": weights,
        "resolution": [backbone.width, backbone.height],
        "dtype": str(backbone.dtype),
        "torch": torch.__version__,
        "seconds": args.seconds,
        "blocks": num_blocks,
        "config": config.to_dict(),
        "paper_a100": PAPER_A100,
        "policies": {},
    }
    run_policy(backbone, config.replace(policy="window"), 2, args.device)  # warm-up: kernels, allocator
    for policy in policies:
        out["policies"][policy] = run_policy(backbone, config.replace(policy=policy), num_blocks, args.device)
        # each policy's row as soon as it is measured: a run cut short keeps what it measured
        print(json.dumps({"policy": policy, **out["policies"][policy]}), file=sys.stderr, flush=True)
    if "fps_with_decode" in out["policies"].get("window", {}) and "fps_with_decode" in out["policies"].get("dynamic", {}):
        out["dynamic_vs_window_fps"] = out["policies"]["dynamic"]["fps_with_decode"] / out["policies"]["window"]["fps_with_decode"]
    if args.full_seconds and args.device == "cuda":
        predicted = memory_table(args.full_seconds, backbone.width, backbone.height, backbone.fps, config)
        out["full_until_oom"] = full_until_oom(backbone, config, blocks_for(args.full_seconds, backbone, config), args.device)
        out["full_until_oom"]["predicted_full_cache_gb_at_end"] = predicted["full_cache_bytes"] / 1e9
        out["full_until_oom"]["gpu_total_gb"] = torch.cuda.get_device_properties(0).total_memory / 1e9
        print(json.dumps({"full_until_oom": out["full_until_oom"]}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
