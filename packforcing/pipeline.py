"""The Python API: a pipeline built once, whose call streams frames and trace events.

    pipe = PackForcingPipeline.from_name("embedded")          # or "tiny-random", "wan-1.3b"
    for event in pipe.stream("a red circle and a blue square", seconds=10, seed=0):
        ...                                                    # RunStart, Frames, Block, ..., RunEnd
    video = pipe("a red circle", seconds=10)                   # everything at once
    video.frames  # (T, H, W, 3) uint8
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from .backbone import Backbone
from .camera import CameraPath
from .controls import LiveControls
from .config import PackForcingConfig, check_number, shown
from .events import Block, Frames
from .sampler import PackForcingSampler, blocks_for

MAX_PROMPT_CHARS = 500
MAX_TOP_K = 64
MAX_MID_CAPACITY = 256
MAX_SEED = 2**32 - 1
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
EMBEDDED_DIR = os.path.join(ASSETS, "embedded")


def _embedded_reason() -> str | None:
    if not os.path.exists(os.path.join(EMBEDDED_DIR, "generator.safetensors")):
        return "embedded weights not found in assets/embedded/ (train them with python -m packforcing.embedded.train)"
    return None


def _wan_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (the 1.3B model is too slow on a CPU)"
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "needs the transformers package for the UMT5 text encoder (pip install -r requirements.txt)"
    return None  # weights missing from the cache are downloaded on first use


MODELS: dict[str, Callable[[], str | None]] = {
    "embedded": _embedded_reason,
    "tiny-random": lambda: None,
    "wan-1.3b": _wan_reason,
}


def available_models() -> dict[str, str | None]:
    """Model name -> None if it can run here, else why not."""
    return {name: reason() for name, reason in MODELS.items()}


def default_model() -> str:
    """The real model where it can run and its weights are already here (no surprise
    20 GB download), else the embedded one."""
    usable = [name for name, reason in available_models().items() if reason is None]
    if "wan-1.3b" in usable:
        from .backbones.wan import weights_available

        if weights_available():
            return "wan-1.3b"
    for name in ("embedded", "tiny-random"):
        if name in usable:
            return name
    return "tiny-random"


def default_config_for(name: str) -> PackForcingConfig:
    """The config a model was trained for, without loading it."""
    if name == "embedded":
        from .embedded.model import EMBEDDED_CONFIG

        return EMBEDDED_CONFIG
    return PackForcingConfig()


def build_backbone(name: str, device=None, dtype=None) -> Backbone:
    if name not in MODELS:
        raise ValueError(f"model={name!r} is not known; choose one of {', '.join(MODELS)}")
    reason = MODELS[name]()
    if reason is not None:
        raise ValueError(f"model {name!r} cannot run here: {reason}")
    if name == "tiny-random":
        from .backbones.tiny import build_tiny_random

        backbone = build_tiny_random()
    elif name == "embedded":
        from .embedded.model import load_embedded

        backbone = load_embedded(EMBEDDED_DIR)
    else:  # the real model is placed and cast while loading
        from .backbones.wan import load_wan

        return load_wan(device=device or "cuda", dtype=dtype or torch.bfloat16)
    if device is not None or dtype is not None:
        backbone.transformer.to(device=device, dtype=dtype)
        if backbone.hr_compressor is not None:
            backbone.hr_compressor.to(device=device, dtype=dtype)
    return backbone


@dataclass
class PipelineOutput:
    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: int
    events: list = field(default_factory=list)  # every event but Frames


class PackForcingPipeline:
    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        # The weights (and the processors' session slot) are shared by every run of this
        # pipeline; a run holds this lock for each step that touches them (see stream).
        self.lock = threading.Lock()

    @classmethod
    def from_name(cls, name: str, device=None, dtype=None) -> "PackForcingPipeline":
        return cls(build_backbone(name, device, dtype))

    @classmethod
    def from_pretrained(cls, transformer_path: str | None = None, base_repo: str | None = None, device="cuda", dtype=torch.bfloat16):
        """Wan2.1-T2V-1.3B (VAE, UMT5) + Self-Forcing's causal generator, from the Hub or local paths."""
        from .backbones.wan import load_wan

        return cls(load_wan(transformer_path=transformer_path, base_repo=base_repo, device=device, dtype=dtype))

    @property
    def name(self) -> str:
        return self.backbone.name

    @property
    def fps(self) -> int:
        return self.backbone.fps

    @property
    def max_seconds(self) -> float:
        return self.backbone.max_seconds

    @property
    def default_config(self) -> PackForcingConfig:
        return self.backbone.default_config

    def describe_prompt(self, prompt: str) -> list[str]:
        return self.backbone.describe_prompt(prompt)

    def validate(self, prompt, seconds, config: PackForcingConfig, seed=0) -> None:
        """Raise ValueError naming the bad value and what is allowed."""
        check_number("seed", seed, 0, MAX_SEED, integer=True)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt is empty; type a description of the video")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {len(prompt):,} characters long; at most {MAX_PROMPT_CHARS} are allowed")
        if self.backbone.validate_prompt is not None:
            self.backbone.validate_prompt(prompt)
        try:
            seconds = float(seconds)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"duration={shown(seconds)} is not a number of seconds") from None
        if not 1 <= seconds <= self.max_seconds:
            raise ValueError(f"duration={seconds:g} s is out of range; allowed 1 to {self.max_seconds:g} s")
        if config.top_k > MAX_TOP_K:
            raise ValueError(f"top_k={config.top_k} is out of range; allowed 0 to {MAX_TOP_K}")
        if config.mid_capacity > MAX_MID_CAPACITY:
            raise ValueError(f"mid_capacity={config.mid_capacity} is out of range; allowed 0 to {MAX_MID_CAPACITY}")
        latent_frames = blocks_for(seconds, self.backbone, config) * config.block_frames
        if config.sink_frames > latent_frames:
            raise ValueError(
                f"sink_frames={config.sink_frames} is larger than the whole video "
                f"({latent_frames} latent frames for {seconds:g} s); allowed 0 to {latent_frames}"
            )

    @property
    def has_camera(self) -> bool:
        return self.backbone.move_camera is not None

    def camera_path(self, camera: str | CameraPath | None) -> CameraPath | None:
        """`right:8,left:8` (or a CameraPath) -> CameraPath; ValueError for a camera-less model."""
        if camera is None or isinstance(camera, str) and not camera.strip():
            return None
        path = camera if isinstance(camera, CameraPath) else CameraPath.parse(camera)
        if not self.has_camera:
            raise ValueError(f"model {self.name!r} has no camera to steer; the embedded model has one")
        return path

    def stream(self, prompt: str, seconds: float, seed: int = 0, config: PackForcingConfig | None = None, should_stop=None,
               camera: str | CameraPath | None = None, controls: LiveControls | None = None) -> Iterator:
        """Events of one run. camera: a path such as `right:8,left:8` (directions left,
        still, right; seconds); controls: live steering (LiveControls.steer), applied from
        the next block.

        Each step between two events (a block's forwards, its decode, the cache write) runs
        under `self.lock`, released only when the step has finished: a consumer abandoned or
        cancelled mid-block (a closed tab, a cancelled job) still owns the model until that
        block's forward ends, and the next run waits for it instead of interleaving its
        layers with the abandoned one's."""
        config = config or self.default_config
        self.validate(prompt, seconds, config, seed)
        path = self.camera_path(camera)
        steps = self._steps(prompt, seconds, int(seed), config, should_stop, path, controls)
        try:
            while True:
                with self.lock:
                    event = next(steps, None)
                if event is None:
                    return
                yield event
        finally:
            steps.close()  # the sampler empties its cache (no forward runs)

    def _steps(self, prompt, seconds, seed, config, should_stop, path, controls) -> Iterator:
        # built inside the first locked step: installing the processors touches the model
        sampler = PackForcingSampler(self.backbone, config, seed=seed)
        num_blocks = blocks_for(float(seconds), self.backbone, config)
        yield from sampler.stream(prompt, num_blocks, self.name, should_stop, self.describe_prompt(prompt), path, controls)

    def __call__(self, prompt: str, seconds: float, seed: int = 0, config: PackForcingConfig | None = None,
                 camera: str | CameraPath | None = None) -> PipelineOutput:
        frames, events = [], []
        for event in self.stream(prompt, seconds, seed, config, camera=camera):
            if isinstance(event, Frames):
                frames.append(event.frames)
            else:
                events.append(event)
        return PipelineOutput(frames=np.concatenate(frames), fps=self.fps, events=events)


__all__ = ["PackForcingPipeline", "PipelineOutput", "available_models", "default_model", "Block"]
