"""`wan-1.3b`: Wan2.1-T2V-1.3B (VAE, UMT5) + Self-Forcing's causal DMD generator.

Nothing is downloaded at import time. Weights come from the Hugging Face cache (or a
download through huggingface_hub), or from local paths:
  PACKFORCING_WAN_DIR          a local copy of Wan-AI/Wan2.1-T2V-1.3B-Diffusers
  PACKFORCING_SELF_FORCING     a local self_forcing_dmd.pt or converted .safetensors
"""

from __future__ import annotations

import os

import torch

from ..backbone import Backbone, WanVAECodec
from ..registry import ModelEntry
from .wan_checkpoint import SELF_FORCING_FILE, SELF_FORCING_REPO

BASE_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
TEXT_TOKENS = 512  # Self-Forcing encodes 512 tokens (diffusers' WanPipeline defaults to 226)


def _cached(repo: str, filename: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    path = try_to_load_from_cache(repo, filename)
    return path if isinstance(path, str) else None


def weights_available() -> bool:
    base = os.environ.get("PACKFORCING_WAN_DIR") or _cached(BASE_REPO, "vae/config.json")
    generator = os.environ.get("PACKFORCING_SELF_FORCING") or _cached(SELF_FORCING_REPO, SELF_FORCING_FILE)
    return bool(base and generator)


class UMT5PromptEncoder:
    """prompt -> (1, 512, 4096) UMT5-XXL states with padding rows zeroed (as Wan does).
    Encoded once per prompt; `offload()` moves the encoder to the CPU afterwards."""

    def __init__(self, tokenizer, encoder, device):
        self.tokenizer, self.encoder, self.device = tokenizer, encoder, device
        self._memo: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, prompt: str) -> torch.Tensor:
        if prompt not in self._memo:
            self.encoder.to(self.device)
            ids = self.tokenizer([prompt], padding="max_length", max_length=TEXT_TOKENS, truncation=True,
                                 return_tensors="pt")
            mask = ids.attention_mask.to(self.device)
            states = self.encoder(ids.input_ids.to(self.device), attention_mask=mask).last_hidden_state
            self._memo = {prompt: (states * mask[..., None]).cpu()}
            self.offload()
        return self._memo[prompt]

    def offload(self) -> None:
        self.encoder.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_wan(transformer_path: str | None = None, base_repo: str | None = None, device="cuda", dtype=torch.bfloat16,
             transformer_config: dict | None = None) -> Backbone:
    """The real model. `transformer_config` is only for tests (tiny synthetic checkpoints)."""
    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, UMT5EncoderModel

    from .wan_checkpoint import load_self_forcing_transformer

    base = base_repo or os.environ.get("PACKFORCING_WAN_DIR") or BASE_REPO
    generator = transformer_path or os.environ.get("PACKFORCING_SELF_FORCING") or SELF_FORCING_REPO
    transformer = load_self_forcing_transformer(generator, dtype=dtype, device=device, config=transformer_config)
    # the VAE runs in the generator's dtype, as in Self-Forcing's inference (its whole
    # pipeline is cast to bf16); in fp32 the decode took half of each block's time on an H100
    vae = AutoencoderKLWan.from_pretrained(base, subfolder="vae", torch_dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(base, subfolder="tokenizer")
    encoder = UMT5EncoderModel.from_pretrained(base, subfolder="text_encoder", torch_dtype=dtype).eval()
    return Backbone(
        name="wan-1.3b",
        transformer=transformer,
        codec=WanVAECodec(vae),
        encode_prompt=UMT5PromptEncoder(tokenizer, encoder, device),
        width=832,
        height=480,
        fps=16,
        hr_compressor=None,  # no trained HR weights exist: the training-free LR branch is used
        max_seconds=120.0,
    )


def _unavailable() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (the 1.3B model is too slow on a CPU)"
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "needs the transformers package for the UMT5 text encoder (pip install -r requirements.txt)"
    return None  # weights missing from the cache are downloaded on first use


MODEL = ModelEntry(
    name="wan-1.3b",
    description="Wan2.1-T2V-1.3B with Self-Forcing's causal few-step generator, 832x480 at 16 FPS: the real model "
                "(CUDA GPU, about 20 GB of weights)",
    load=lambda device=None, dtype=None: load_wan(device=device or "cuda", dtype=dtype or torch.bfloat16),
    examples=(
        "a red fox trotting through fresh snow in a pine forest, golden hour",
        "a drone shot along a rocky coastline with waves breaking, cinematic",
    ),
    unavailable=_unavailable,
    ready=weights_available,
    default_rank=0,
)
