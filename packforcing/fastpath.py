"""The fast path: the same sampler, compiled, with decoding off the critical path.

Compile (regional): each Wan transformer block is compiled once and that graph serves
every layer. The compiler traces the projections, norms, modulation and RoPE of a block
(and fuses them) and stops at the cache (attention.py's `_cache_attend`), so it sees only
the current block's tokens: one static shape for the block's passes and one for a
compressed block's, whatever the context length. Early blocks need no padding and no
recompiles happen once the first block has been compressed.

Decode ahead (decoding.py): block N is decoded by a worker thread, on a second CUDA
stream on a GPU, while block N+1 denoises.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .attention import install

BACKENDS = ("inductor", "aot_eager")
MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
SDPA = {"auto": None, "cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


@dataclass(frozen=True)
class FastPath:
    compile: bool = False
    backend: str = "inductor"  # aot_eager: the same graphs without code generation (tests)
    mode: str = "default"  # reduce-overhead adds CUDA graphs to each compiled piece
    decode_ahead: bool = False
    sdpa: str = "auto"  # attention backend put first; auto keeps PyTorch's order
    # the VAE's convolutions in channels-last (CUDA only); off until bench/gpu.py's
    # decode_layout has measured it faster on a GPU (the VAE's reshapes may undo it)
    channels_last_decode: bool = False

    def __post_init__(self):
        for name, value, allowed in (("backend", self.backend, BACKENDS), ("mode", self.mode, MODES),
                                     ("sdpa", self.sdpa, tuple(SDPA))):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(allowed)}")

    def apply(self, backbone, held: contextlib.ExitStack | None = None) -> str:
        """Compile the transformer and lay out the decoder, once per backbone. Returns
        the SDPA kernel its self-attention runs in (checked on a small input). `held`
        keeps the SDPA preference (sdpa other than auto) until its owner closes it."""
        if self.compile:
            compile_transformer(backbone.transformer, self.backend, self.mode)
        if self.sdpa != "auto":
            if held is None:
                raise ValueError(f"sdpa={self.sdpa!r} is a preference held until turned off; pass an ExitStack to "
                                 "hold it")
            held.enter_context(prefer_sdpa(self.sdpa))
        vae = getattr(backbone.codec, "vae", None)
        if self.channels_last_decode and vae is not None and backbone.device.type == "cuda":
            conv_layout(vae, channels_last=True)
            torch.backends.cudnn.benchmark = True  # a block's decode shapes never change
        cfg = backbone.transformer.config
        q = torch.randn(1, cfg.num_attention_heads, 256, cfg.attention_head_dim, device=backbone.device,
                        dtype=backbone.dtype)
        return sdpa_backend_used(q, q, q)


def conv_layout(module: torch.nn.Module, channels_last: bool) -> None:
    """Convolution weights in channels-last (3-D for Conv3d, 2-D for Conv2d), cuDNN's
    preferred layout for bf16, or back to contiguous. Activations follow the weights."""
    for p in module.parameters():
        if p.dim() in (4, 5):
            last = torch.channels_last_3d if p.dim() == 5 else torch.channels_last
            layout = last if channels_last else torch.contiguous_format
            p.data = p.data.contiguous(memory_format=layout)


def compile_transformer(transformer, backend: str = "inductor", mode: str = "default") -> None:
    """Regional compilation of the repeated Wan blocks (diffusers' compile_repeated_blocks).
    Static shapes (dynamic=False): exactly two, the block's tokens and a compressed block's."""
    install(transformer)  # the cache-aware processors must be in place before tracing
    wanted = (backend, mode)
    done = getattr(transformer, "_packforcing_compiled", None)
    if done == wanted:
        return
    if done is not None:
        raise ValueError(f"the transformer is already compiled with backend/mode {done}; build a new one for {wanted}")
    transformer.compile_repeated_blocks(backend=backend, mode=None if mode == "default" else mode, dynamic=False)
    transformer._packforcing_compiled = wanted
    # CUDA graphs reuse their output buffers at the next replay: the cache must keep copies
    transformer._packforcing_slot.copy_kept = mode == "reduce-overhead"


def prefer_sdpa(name: str) -> contextlib.AbstractContextManager:
    """A context in which one SDPA backend comes first (the others stay as fallbacks)."""
    first = SDPA[name]
    others = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)
    return sdpa_kernel([first] + [b for b in others if b != first], set_priority=True)


_SDPA_KERNELS = {
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_for_cpu",
    "aten::_scaled_dot_product_attention_math": "math",
}


def sdpa_backend_used(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """Which SDPA kernel runs for these (B, H, S, D) inputs, read off the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    used = [_SDPA_KERNELS[e.name] for e in prof.events() if e.name in _SDPA_KERNELS]
    if not used:
        raise RuntimeError(f"no known SDPA kernel ran; profiled {sorted({e.name for e in prof.events()})}")
    return used[0]
