"""The v11 embedded model: the v1-v10 architecture (a 4-layer WanTransformer3DModel of
width 128, the fixed WorldCodec, a tiny text encoder, an HR compressor) told where its
camera looks.

PlaceEmbedding adds, to every token entering the first block, a learned projection of
harmonics of the panorama x its column shows (wrapping with the panorama). It runs in
every pass (denoising, the write pass, the compressed pass of a mid block), so the first
layer's pre-RoPE queries and keys carry the place: the dynamic selection score can find
the mid block filmed where the camera is now, and attention can copy what was there.
It is added by a forward pre-hook on the first block (no fork of diffusers' model);
after the HR compressor's hook on the patch embedding, which replaces its output.

Patch 4x4 (v1-v10: 2x2): 64 tokens a 1-s block instead of 256, about 4x less compute
per training step (CPU training is compute-bound), and 8 compressed tokens then hold a
block at 8x instead of 32x. Compression is HR only: the LR branch pools a whole view
into less than one 4x4-patch token.

Codec: "dct" (the fixed WorldCodec, 16x16 latent, patch 4x4; the default) or "ae" (the
learned autoencoder of autoencoder.py, an 8x8 latent as Wan's VAE makes, patch 2x2: a
1-s block is still 64 tokens). With the shared HR strides an 8x8 latent compresses a
block to a (2, 1, 1) grid: 2 tokens, the paper's 32x.
"""

from __future__ import annotations

import math

import torch
from einops import repeat

from . import panorama as world
from .architecture import EMBEDDED_HR_WIDTHS, EMBEDDED_TRANSFORMER, PromptEncoder

HARMONICS = 32  # cos/sin of 1..32 cycles per panorama: a 16-px kernel when matched


class PlaceEmbedding(torch.nn.Module):
    """Camera x per pixel frame, per clip -> a per-token embedding added to the tokens
    entering the first transformer block.

    `xs` holds the whole run's camera x (B, frames); `at_frame` (the Backbone's on_frame
    hook) says which block the next pass processes. Sampling appends a block at a time
    through `move` (the Backbone's move_camera hook); training sets a whole clip.
    `grids` maps a pass's token count to its (frames, rows, columns) token grid: a
    block's full grid, and the compressed grid of a mid block."""

    def __init__(
        self,
        dim: int,
        grids: dict[int, tuple[int, int, int]],
        frames_per_block: int = 16,
        block_frames: int = 4,
        harmonics: int = HARMONICS,
    ):
        super().__init__()
        self.proj = torch.nn.Linear(2 * harmonics, dim)
        self.register_buffer("freqs", torch.arange(1, harmonics + 1, dtype=torch.float32), persistent=False)
        self.grids, self.frames_per_block, self.block_frames = grids, frames_per_block, block_frames
        self.xs = torch.zeros(1, 0)
        self.block, self.direction = 0, "still"

    def set_clip(self, xs) -> None:
        xs = torch.as_tensor(xs, dtype=torch.float32)
        self.xs = xs.reshape(-1, xs.shape[-1])

    def at_frame(self, frame: float) -> None:
        self.block = int(frame // self.block_frames)

    def move(self, index: int, direction: str | None, prompt: str) -> dict:
        """Extend the run's camera by block `index` (direction None: the prompt's pan)."""
        if direction is None:
            direction = world.spec_from_prompt(prompt).pan
        n = self.frames_per_block
        # as world.positions: each frame steps by the direction of the block it belongs to
        start = (
            0.0 if index == 0 else float(self.xs[0, index * n - 1]) + world.STEP * world.DIRECTION_SIGN[self.direction]
        )
        xs = torch.from_numpy(world.positions([direction], start, n)).float()[None]
        # a run starts afresh at block 0, whatever clip (of whatever batch) was set before
        self.xs, self.direction = (torch.cat([self.xs[:, : index * n], xs], 1) if index else xs), direction
        return {
            "direction": direction,
            "x": round(start % world.PERIOD, 2),
            "period": world.PERIOD,
            "end": round(float(xs[0, -1]) % world.PERIOD, 2),
            "view": world.VIEW,
        }

    def features(self, batch: int, tokens: int, device, dtype) -> torch.Tensor:
        """(batch, tokens, dim): the embedding of the pass's token grid, raster order (f, h, w)."""
        if tokens not in self.grids:
            raise RuntimeError(f"a pass of {tokens} tokens has no known grid (known: {sorted(self.grids)})")
        f, h, w = self.grids[tokens]
        n = self.frames_per_block
        xs = self.xs[:, self.block * n : (self.block + 1) * n]
        if xs.shape[1] != n:
            raise RuntimeError(f"no camera for block {self.block} (camera known for {self.xs.shape[1] // n} blocks)")
        cam = xs.reshape(xs.shape[0], f, n // f).mean(-1)  # (b, f)
        cols = (torch.arange(w, dtype=torch.float32) + 0.5) * (world.VIEW / w)
        x = cam[:, :, None] + cols  # (b, f, w) panorama x of each token column
        phase = (x % world.PERIOD)[..., None] * (2 * math.pi / world.PERIOD) * self.freqs.cpu()
        feats = torch.cat([phase.cos(), phase.sin()], -1).to(device)
        if feats.shape[0] != batch:  # guidance runs prompt and zeroed prompt as one batch
            feats = feats.repeat(batch // feats.shape[0], 1, 1, 1)
        emb = self.proj(feats.to(self.proj.weight.dtype))
        return repeat(emb, "b f w c -> b (f h w) c", h=h).to(dtype)

    def add_to_first_block_input(self, module, args):
        hidden = args[0]
        return (hidden + self.features(hidden.shape[0], hidden.shape[1], hidden.device, hidden.dtype), *args[1:])


# The method's proportions as in v1-v10 (4-frame blocks, 2 sink blocks, 1 recent, top-4
# of a 12-block mid bank, 8 compressed tokens a block). A block pans a whole view, so a
# place is held by one or two blocks and top-4 can hold the block filmed there.
STEPS = 6
# v10's transformer with 4x4 patches: a 1-s block is 64 tokens, so 8 compressed tokens are 8x
TRANSFORMER = {**EMBEDDED_TRANSFORMER, "patch_size": (1, 4, 4)}
# the same transformer over the autoencoder's 8x8 latent: 2x2 patches keep 64 tokens a block
AE_TRANSFORMER = {**EMBEDDED_TRANSFORMER, "patch_size": (1, 2, 2)}
CODECS = ("dct", "ae")


def transformer_config(codec: str) -> dict:
    """The transformer config a codec's latent takes."""
    if codec not in CODECS:
        raise ValueError(f"codec={codec!r} not allowed: one of {CODECS}")
    return TRANSFORMER if codec == "dct" else AE_TRANSFORMER


def make_codec(codec: str):
    if codec == "ae":
        from .autoencoder import load_codec

        return load_codec()
    from .codec import WorldCodec

    return WorldCodec()


def default_config():
    from ..config import PackForcingConfig

    return PackForcingConfig(
        top_k=4,
        mid_capacity=12,
        compression="hr",
        step_rule="euler",
        timesteps=tuple(1000.0 * (1 - i / STEPS) for i in range(STEPS)),
        shift=2.0,
        guidance_scale=1.5,
    )


def build(seed: int = 0, codec: str = "dct", prediction_type: str = "flow_prediction", bind_objects: bool = False):
    """Fresh random weights (training's starting point) over the named codec's latent;
    prediction_type: what the transformer outputs (Backbone.prediction_type);
    bind_objects: the prompt encoder's (TinyTextEncoder)."""
    from diffusers import WanTransformer3DModel

    from ..backbone import Backbone
    from ..compression import HRCompressor
    from ..memory import compressed_grid
    from .vocab import TinyTextEncoder, describe_prompt, validate_prompt

    config = transformer_config(codec)
    codec_object = make_codec(codec)
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**config)
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    hr = HRCompressor(config["in_channels"], inner, EMBEDDED_HR_WIDTHS)
    text_encoder = TinyTextEncoder(text_dim=config["text_dim"], bind_objects=bind_objects)
    side = world.VIEW // codec_object.spatial_factor
    # a 4-latent-frame block's token grids: full resolution, and the HR compressor's output
    full = (4, side // config["patch_size"][1], side // config["patch_size"][2])
    small = compressed_grid(4, side, side)
    place = PlaceEmbedding(inner, {math.prod(full): full, math.prod(small): small})
    transformer.blocks[0].register_forward_pre_hook(place.add_to_first_block_input)
    backbone = Backbone(
        name="embedded",
        transformer=transformer,
        codec=codec_object,
        encode_prompt=PromptEncoder(text_encoder),
        width=world.VIEW,
        height=world.VIEW,
        fps=world.FPS,
        hr_compressor=hr,
        describe_prompt=describe_prompt,
        validate_prompt=validate_prompt,
        max_seconds=120.0,
        default_config=default_config(),
        on_frame=place.at_frame,
        move_camera=place.move,
        prediction_type=prediction_type,
    )
    backbone.text_encoder, backbone.place, backbone.codec_name = text_encoder, place, codec
    return backbone


def trainable_modules(backbone) -> dict[str, torch.nn.Module]:
    return {
        "transformer": backbone.transformer,
        "hr": backbone.hr_compressor,
        "text": backbone.text_encoder,
        "place": backbone.place,
    }


def save(backbone, directory: str, metadata: dict | None = None) -> str:
    import json
    import os

    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    codec = getattr(backbone, "codec_name", "dct")
    tensors = {
        f"{prefix}.{k}": v.detach().float().contiguous()
        for prefix, module in trainable_modules(backbone).items()
        for k, v in module.state_dict().items()
    }
    path = os.path.join(directory, "generator.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(
            {
                "architecture": "camera",
                "codec": codec,
                "prediction_type": backbone.prediction_type,
                "transformer": transformer_config(codec),
                "place_harmonics": HARMONICS,
                "bind_objects": backbone.text_encoder.bind_objects,
                **(metadata or {}),
            },
            f,
            indent=1,
        )
    return path


def load(directory: str):
    import json
    import os

    from safetensors.torch import load_file

    path = os.path.join(directory, "generator.safetensors")
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    # weights saved before these choices existed are DCT, predict the velocity, read bare words
    backbone = build(codec=config.get("codec", "dct"), prediction_type=config.get("prediction_type", "flow_prediction"),
                     bind_objects=config.get("bind_objects", False))
    tensors = load_file(path)
    for prefix, module in trainable_modules(backbone).items():
        own = {k[len(prefix) + 1 :]: v.float() for k, v in tensors.items() if k.startswith(prefix + ".")}
        missing, unexpected = module.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: {prefix} weights do not match (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        module.eval().requires_grad_(False)
    return backbone
