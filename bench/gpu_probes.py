"""What bench/gpu.py measures besides streamed FPS: the per-stage breakdown and host syncs
of a block, the decode's memory layout, the packed context's rotation, the attention
kernel, and the PSNR of the fast path's frames against the eager ones."""

from __future__ import annotations

import math
import statistics
import time
import warnings

import numpy as np
import torch

import packforcing.attention as attention_module
from bench.host_syncs import host_syncs
from packforcing.decoding import Decoded
from packforcing.fastpath import conv_layout, sdpa_backend_used
from packforcing.rope import rotate_in_time, temporal_rotation, to_device
from packforcing.sampler import PackForcingSampler
from packforcing.video import to_uint8

PROMPT = "A red fox trots through fresh snow in a birch forest at dawn, cinematic, tracking shot"


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """In dB, capped at 99 (identical frames), so the JSON stays standard."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else min(99.0, 10 * math.log10(255.0**2 / mse))


def breakdown(backbone, config, num_blocks, steady_from, device) -> dict:
    """Seconds per block of each stage, synchronised, over the blocks at the bounded
    context; and the host syncs inside the last two blocks' transformer stage (CUDA's
    sync debug mode, and the host's reads of tensor values, the only kind a CPU shows)."""
    sampler = PackForcingSampler(backbone, config, seed=0)
    decoder = backbone.codec.stream_decoder()
    text = backbone.encode_prompt(PROMPT).to(backbone.device, backbone.dtype)
    scored, plain, cuda, syncs = [0.0], attention_module.factorised_scores, torch.device(device).type == "cuda", []

    def timed_scores(*args, **kwargs):  # the selection: scores, their copy to the host, top-k
        sync(device)
        t0 = time.perf_counter()
        out = plain(*args, **kwargs)
        scored[0] += time.perf_counter() - t0
        return out

    rows, attention_module.factorised_scores = [], timed_scores
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        with torch.no_grad():
            for index in range(num_blocks):
                checked = index >= num_blocks - 2
                scored[0] = 0.0
                sync(device)
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught, host_syncs() as reads:
                    warnings.simplefilter("always")
                    if cuda and checked:
                        torch.cuda.set_sync_debug_mode("warn")
                    sampler.begin_block(index)
                    x0 = sampler.denoise_block(index, text)
                    block = sampler.write_block(index, x0, text)
                    if cuda:
                        torch.cuda.set_sync_debug_mode(0)
                enqueued = time.perf_counter()  # the host's own time: its work is queued, not done
                if checked:
                    syncs += [f"cuda: {w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
                    syncs += [f"host read .{name}: {where}" for name, where in reads]
                sync(device)
                t1 = time.perf_counter()
                pixels = decoder.decode_next(x0)
                to_uint8(pixels)
                t2 = time.perf_counter()
                sampler.memory.admit(block, x0, Decoded(pixels=pixels), text)
                sync(device)
                rows.append({"transformer": t1 - t0 - scored[0], "selection": scored[0], "decode": t2 - t1,
                             "compression": time.perf_counter() - t2, "host": enqueued - t0 - scored[0]})
    finally:
        attention_module.factorised_scores = plain
        sampler.memory.reset()
    steady = rows[steady_from:]
    # host: the transformer stage's Python and launches, overlapped with the GPU's work
    # (on a CPU the same time as the transformer); it is the limit only if it is larger
    out = {stage: statistics.mean(r[stage] for r in steady) for stage in rows[0]}
    out["blocks_averaged"] = len(steady)
    out["fps_without_decode"] = 16 / (out["transformer"] + out["selection"] + out["compression"])
    out["syncs_per_block"], out["syncs_where"] = len(syncs) / 2, sorted(set(syncs))
    # decode and generation one after the other: the peak that decoding ahead overlaps
    out["peak_gpu_gb_serial"] = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
    return out


def decode_layout(backbone, config, device) -> dict:
    """Seconds per block of the streaming decode, contiguous against channels-last 3-D
    (cuDNN's preferred layout for bf16 convolutions; the VAE's reshapes may undo it)."""
    vae, out = backbone.codec.vae, {}
    h, w = backbone.latent_hw
    latent = torch.randn(1, backbone.codec.latent_channels, config.block_frames, h, w, device=device,
                         dtype=backbone.dtype)
    with torch.no_grad():
        for channels_last in (False, True):
            conv_layout(vae, channels_last)
            decoder = backbone.codec.stream_decoder()
            for _ in range(2):  # the first chunk, and cuDNN's autotuning
                decoder.decode_next(latent)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(2):
                decoder.decode_next(latent)
            sync(device)
            out["channels_last_s" if channels_last else "contiguous_s"] = (time.perf_counter() - t0) / 2
    conv_layout(vae, False)
    return out


def rotation_cost(backbone, config, device) -> dict:
    """The packed context's rotation: its tables (once per block, on the host, then one
    asynchronous copy) and the rotation itself (every layer of every pass)."""
    compressed = math.prod(backbone.compressed_grid(config.block_frames))
    full_blocks = config.sink_blocks + config.recent_blocks
    tokens = full_blocks * config.block_frames * backbone.tokens_per_latent_frame() + config.top_k * compressed
    cfg = backbone.transformer.config
    t0 = time.perf_counter()
    tables = [to_device(t, device) for t in temporal_rotation(torch.full((tokens,), -7.0), cfg.attention_head_dim)]
    sync(device)
    made = time.perf_counter() - t0
    keys = torch.randn(1, tokens, cfg.num_attention_heads, cfg.attention_head_dim, device=device, dtype=backbone.dtype)
    rotate_in_time(keys, *tables)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        rotate_in_time(keys, *tables)
    sync(device)
    per_layer = (time.perf_counter() - t0) / 10
    passes = len(config.timesteps) + 1
    return {"context_tokens": tokens, "tables_s_per_block": made, "rotate_s_per_layer": per_layer,
            "rotate_s_per_block": per_layer * cfg.num_layers * passes}


def sdpa_report(backbone, config, device) -> dict:
    """Which attention kernel a steady-state pass uses, and each one's time on that shape."""
    cfg = backbone.transformer.config
    q_len = config.block_frames * backbone.tokens_per_latent_frame()
    compressed = math.prod(backbone.compressed_grid(config.block_frames))
    k_len = q_len + (config.sink_blocks + config.recent_blocks) * q_len + config.top_k * compressed
    make = lambda n: torch.randn(1, cfg.num_attention_heads, n, cfg.attention_head_dim, device=device,
                                 dtype=backbone.dtype)  # noqa: E731
    q, k, v = make(q_len), make(k_len), make(k_len)
    out = {"shape": [q_len, k_len], "default": sdpa_backend_used(q, k, v), "ms": {}}
    if torch.device(device).type != "cuda":
        return out
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel([backend]):
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(5):
                    torch.nn.functional.scaled_dot_product_attention(q, k, v)
                end.record()
                torch.cuda.synchronize()
                out["ms"][name] = start.elapsed_time(end) / 5
        except RuntimeError as e:
            out["ms"][name] = f"unavailable: {str(e).splitlines()[0][:120]}"
    timed = {n: t for n, t in out["ms"].items() if isinstance(t, float)}
    out["fastest"] = min(timed, key=timed.get) if timed else None
    return out
