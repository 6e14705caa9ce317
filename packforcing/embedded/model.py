"""`embedded`: the small world model this project trains and ships in assets/embedded/.

Same adapter, cache and sampler as the real model; only the config differs: a 4-layer
WanTransformer3DModel (width 128), the fixed WorldCodec in the VAE's role, and a tiny
text encoder over the world's vocabulary.
"""

from __future__ import annotations

import json
import os

import torch

from ..backbone import Backbone
from ..compression import HRCompressor
from ..config import PackForcingConfig
from ..registry import ModelEntry
from .evaluate import EVALUATOR

# the shipped weights
EMBEDDED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "assets", "embedded")

EMBEDDED_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    text_dim=64,
    freq_dim=64,
    ffn_dim=512,
    num_layers=4,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
EMBEDDED_HR_WIDTHS = (32, 64, 128, 128)
# The paper's proportions (4-frame blocks, 2 sink blocks, 1 recent block, a compressed
# mid bank with top-k), scaled to the world's 8-second camera loop: with top_k = 4 FIFO
# sees only the last 4 s of the mid bank, so recalling the previous loop needs selection.
# Sampling: the model is an undistilled flow model (trained on every noise level, not
# distilled to four), so it takes Euler steps. 6 guided steps scored as well as 8 on
# the ablation metrics (4 did not) and keep a 1-s block at about 0.25 s on two CPU cores.
EMBEDDED_STEPS = 6
EMBEDDED_CONFIG = PackForcingConfig(
    top_k=4, mid_capacity=12, compression="hr+lr", step_rule="euler",
    timesteps=tuple(1000.0 * (1 - i / EMBEDDED_STEPS) for i in range(EMBEDDED_STEPS)), shift=2.0,
    # guidance 2 restores most of the world's contrast (frame std 29 vs 15 unguided; the
    # world's is 43) and scored best on faithfulness; 2.5 and up break revisits apart
    guidance_scale=2.0,
)
WIDTH = HEIGHT = 64
MAX_SECONDS = 120.0
# the world's camera is back where it was every 8 s: 8 one-second blocks
CLOCK_BLOCKS = 8


class CameraClock(torch.nn.Module):
    """Tells the model where the camera is in the world's loop: a learned vector per block
    of the loop (block index mod `loop_blocks`), added to the timestep embedding, so it
    conditions every layer through AdaLN, in the denoising pass and in the pass that
    writes a block's K/V alike.

    Why the world model needs it: under RoPE packing every block sees its memory at the
    same packed distances (sink block 0 is 28 latent frames back from block 7 on), so
    nothing tells the model that the camera has come back to a place, and in its own
    videos no content cue does either (its block 7 does not happen to lead into its
    block 0). World models are conditioned on the camera's pose for the same reason.
    The clock says *when* the camera returns; *what* was there only memory can supply
    (a window policy, which keeps the recent block alone, has no way to know it). The
    table starts at zero, so adding the clock to trained weights leaves them unchanged."""

    def __init__(self, dim: int, block_frames: int, loop_blocks: int = CLOCK_BLOCKS):
        super().__init__()
        self.block_frames, self.loop_blocks = block_frames, loop_blocks
        self.table = torch.nn.Parameter(torch.zeros(loop_blocks, dim))
        self.phase = 0

    def at_frame(self, frame: float) -> None:
        self.phase = int(frame // self.block_frames) % self.loop_blocks

    def add_to_timestep_embedding(self, module, inputs, output):
        return output + self.table[self.phase].to(output)


class _PromptEncoder:
    """prompt -> (1, L, text_dim) through the world's tokenizer and the trained encoder."""

    def __init__(self, text_encoder):
        self.text_encoder = text_encoder

    def __call__(self, prompt: str) -> torch.Tensor:
        from .vocab import tokenize

        ids = tokenize(prompt).reshape(1, -1).to(next(self.text_encoder.parameters()).device)
        return self.text_encoder(ids)


def build_embedded(seed: int = 0, camera_clock: bool = True) -> Backbone:
    """Fresh random weights (the training script's starting point). `camera_clock=False`
    builds the clock-less architecture of weights trained before it (v1-v8)."""
    from diffusers import WanTransformer3DModel

    from .codec import WorldCodec
    from .vocab import TinyTextEncoder, describe_prompt, validate_prompt

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**EMBEDDED_TRANSFORMER)
    inner = EMBEDDED_TRANSFORMER["num_attention_heads"] * EMBEDDED_TRANSFORMER["attention_head_dim"]
    hr = HRCompressor(EMBEDDED_TRANSFORMER["in_channels"], inner, EMBEDDED_HR_WIDTHS)
    text_encoder = TinyTextEncoder(text_dim=EMBEDDED_TRANSFORMER["text_dim"])
    backbone = Backbone(
        name="embedded",
        transformer=transformer,
        codec=WorldCodec(),
        encode_prompt=_PromptEncoder(text_encoder),
        width=WIDTH,
        height=HEIGHT,
        fps=16,
        hr_compressor=hr,
        describe_prompt=describe_prompt,
        validate_prompt=validate_prompt,
        max_seconds=MAX_SECONDS,
        default_config=EMBEDDED_CONFIG,
    )
    backbone.text_encoder = text_encoder
    backbone.clock = None
    if camera_clock:
        add_camera_clock(backbone)
    return backbone


def add_camera_clock(backbone: Backbone) -> CameraClock:
    """Give a backbone a (zero) camera clock; its outputs are unchanged until it trains."""
    if getattr(backbone, "clock", None) is not None:
        raise ValueError(f"backbone {backbone.name!r} already has a camera clock (a second one would add twice)")
    clock = CameraClock(backbone.dims().inner_dim, EMBEDDED_CONFIG.block_frames)  # the timestep embedding's width
    backbone.transformer.condition_embedder.time_embedder.register_forward_hook(clock.add_to_timestep_embedding)
    backbone.clock, backbone.on_frame = clock, clock.at_frame
    return clock


def trainable_modules(backbone: Backbone) -> dict[str, torch.nn.Module]:
    modules = {"transformer": backbone.transformer, "hr": backbone.hr_compressor, "text": backbone.text_encoder}
    if backbone.clock is not None:
        modules["clock"] = backbone.clock
    return modules


def save_embedded(backbone: Backbone, directory: str, metadata: dict | None = None) -> str:
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    tensors = {}
    for prefix, module in trainable_modules(backbone).items():
        for key, value in module.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().float().contiguous()  # float32: a resumed run continues from exactly the trained weights
    path = os.path.join(directory, "generator.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
        clock = {"camera_clock_blocks": backbone.clock.loop_blocks} if backbone.clock is not None else {}
        json.dump({"transformer": EMBEDDED_TRANSFORMER, "hr_widths": EMBEDDED_HR_WIDTHS, **clock, **(metadata or {})}, f, indent=1)
    return path


def load_embedded(directory: str) -> Backbone:
    from safetensors.torch import load_file

    path = os.path.join(directory, "generator.safetensors")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; train it with: python -m packforcing.embedded.train_v10 --out {directory}")
    with open(os.path.join(directory, "config.json")) as f:
        meta = json.load(f)
    if meta.get("architecture") == "camera":  # v11: the camera-conditioned model
        from .camera_model import load

        return load(directory)
    clock_blocks = meta.get("camera_clock_blocks")
    if clock_blocks not in (None, CLOCK_BLOCKS):
        raise ValueError(f"{directory}/config.json: camera_clock_blocks={clock_blocks}; the world's loop is {CLOCK_BLOCKS} blocks")
    backbone = build_embedded(camera_clock=clock_blocks is not None)
    tensors = load_file(path)
    for prefix, module in trainable_modules(backbone).items():
        own = {k[len(prefix) + 1 :]: v.float() for k, v in tensors.items() if k.startswith(prefix + ".")}
        missing, unexpected = module.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: {prefix} weights do not match (missing {missing[:5]}, unexpected {unexpected[:5]})")
        module.eval().requires_grad_(False)
    return backbone


def _unavailable() -> str | None:
    if not os.path.exists(os.path.join(EMBEDDED_DIR, "generator.safetensors")):
        return "embedded weights not found in assets/embedded/ (train them with python -m packforcing.embedded.train_v10)"
    return None


MODEL = ModelEntry(
    name="embedded",
    description="a 4-layer world model trained and shipped with this repository (64x64, shapes on a panning panorama, CPU)",
    load=lambda device=None, dtype=None: load_embedded(EMBEDDED_DIR).to(device, dtype),
    default_config=EMBEDDED_CONFIG,
    max_seconds=MAX_SECONDS,
    examples=(
        "a red circle and a blue square, camera pans right",
        "a yellow triangle and a green circle, slow pan left, bouncing",
        "a white square, a red triangle and a blue circle at dusk",
        "two green circles in the forest, fast pan right",
    ),
    unavailable=_unavailable,
    default_rank=1,
    evaluator=EVALUATOR,
)
