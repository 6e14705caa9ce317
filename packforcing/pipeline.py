"""The Python API: a pipeline built once, whose call streams frames and trace events.

    pipe = PackForcingPipeline.from_name("embedded")          # or "tiny-random", "wan-1.3b"
    for event in pipe.stream("a red circle and a blue square", seconds=10, seed=0):
        ...                                                    # RunStart, Frames, Block, ..., RunEnd
    pipe.stream([(0, "a red circle"), (8, "a green circle")], seconds=16)  # a prompt switch at 8 s
    video = pipe("a red circle", seconds=10)                   # everything at once
    video.frames  # (T, H, W, 3) uint8
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from . import registry
from .backbone import Backbone
from .camera import CameraPath
from .config import MAX_MID_CAPACITY, MAX_PROMPT_CHARS, MAX_SEED, MAX_TOP_K, PackForcingConfig, check_number, shown
from .controls import LiveControls
from .events import Block, Frames
from .fastpath import FastPath
from .sampler import PackForcingSampler, blocks_for
from .switching import Schedule, as_schedule, schedule_blocks


def build_backbone(name: str, device=None, dtype=None) -> Backbone:
    """The model registered as `name`, loaded (and placed on `device` / cast to `dtype`)."""
    entry = registry.get(name)
    reason = entry.unavailable()
    if reason is not None:
        raise ValueError(f"model {name!r} cannot run here: {reason}")
    return entry.load(device=device, dtype=dtype)


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
        self.fast: FastPath | None = None
        self._fast_held = contextlib.ExitStack()  # what the fast path entered (an SDPA preference)

    def enable_fast_path(self, fast: FastPath | None = None) -> str:
        """Compile the transformer and decode one block ahead (fastpath.py). The first
        blocks after this pay the compile; a CPU gains little from it. Returns the SDPA
        kernel self-attention runs in (flash, cudnn, efficient, math or flash_for_cpu)."""
        fast = fast or FastPath(compile=True, decode_ahead=True)
        with self.lock:  # compiling rewraps the model's blocks
            self._fast_held.close()
            kernel = fast.apply(self.backbone, self._fast_held)
            self.fast = fast
        return kernel

    def disable_fast_path(self) -> None:
        """Decode inline again and leave the fast path's SDPA preference (a compiled
        transformer stays compiled: it computes the same)."""
        with self.lock:
            self._fast_held.close()
            self.fast = None

    def close(self) -> None:
        """Release what the pipeline holds beyond its weights (the fast path's context)."""
        self.disable_fast_path()

    def __enter__(self) -> PackForcingPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def from_name(cls, name: str, device=None, dtype=None) -> PackForcingPipeline:
        return cls(build_backbone(name, device, dtype))

    @classmethod
    def from_pretrained(cls, transformer_path: str | None = None, base_repo: str | None = None, device="cuda",
                        dtype=torch.bfloat16):
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

    def validate_prompt(self, prompt) -> None:
        """Raise ValueError if this model cannot take `prompt` (also a live switch's)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt is empty; type a description of the video")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {len(prompt):,} characters long; at most {MAX_PROMPT_CHARS} are allowed")
        if self.backbone.validate_prompt is not None:
            self.backbone.validate_prompt(prompt)

    def validate(self, prompt, seconds, config: PackForcingConfig, seed=0) -> tuple[str, dict[int, str]]:
        """Raise ValueError naming the bad value and what is allowed. prompt: text or a
        schedule [(0, "A"), (8, "B"), ...]; returns (first prompt, {block: prompt})."""
        check_number("seed", seed, 0, MAX_SEED, integer=True)
        schedule = as_schedule(prompt)
        for t, text in schedule:
            try:
                self.validate_prompt(text)
            except ValueError as e:
                raise ValueError(f"the prompt at {t} s: {e}" if len(schedule) > 1 else str(e)) from None
        try:
            seconds = float(seconds)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"duration={shown(seconds)} is not a number of seconds") from None
        if not 1 <= seconds <= self.max_seconds:
            raise ValueError(f"duration={seconds:g} s is out of range; allowed 1 to {self.max_seconds:g} s")
        num_blocks = blocks_for(seconds, self.backbone, config)
        seconds_per_block = config.block_frames * self.backbone.codec.temporal_factor / self.fps
        first, switches = schedule_blocks(schedule, seconds, seconds_per_block, num_blocks)
        if config.top_k > MAX_TOP_K:
            raise ValueError(f"top_k={config.top_k} is out of range; allowed 0 to {MAX_TOP_K}")
        if config.mid_capacity > MAX_MID_CAPACITY:
            raise ValueError(f"mid_capacity={config.mid_capacity} is out of range; allowed 0 to {MAX_MID_CAPACITY}")
        latent_frames = num_blocks * config.block_frames
        if config.sink_frames > latent_frames:
            raise ValueError(
                f"sink_frames={config.sink_frames} is larger than the whole video "
                f"({latent_frames} latent frames for {seconds:g} s); allowed 0 to {latent_frames}"
            )
        return first, switches

    @property
    def has_camera(self) -> bool:
        return self.backbone.move_camera is not None

    def camera_path(self, camera: str | CameraPath | None) -> CameraPath | None:
        """`right:8,left:8` (or a CameraPath) -> CameraPath; ValueError for a camera-less model."""
        if camera is None or isinstance(camera, str) and not camera.strip():
            return None
        if not self.has_camera:  # said before the path is read: no reason to parse what cannot be used
            raise ValueError(f"model {self.name!r} has no camera to steer (no shipped model takes a camera path yet); "
                             "leave the camera path empty")
        if not isinstance(camera, (str, CameraPath)):
            raise ValueError("the camera path must be text such as right:8,left:8")
        return camera if isinstance(camera, CameraPath) else CameraPath.parse(camera)

    def stream(self, prompt: str | Schedule, seconds: float, seed: int = 0, config: PackForcingConfig | None = None,
               should_stop=None,
               camera: str | CameraPath | None = None, controls: LiveControls | None = None) -> Iterator:
        """Events of one run. prompt: text, or a schedule [(0, "A"), (8, "B")] switching at
        block boundaries; camera: a path such as `right:8,left:8` (directions left, still,
        right; seconds); controls: live changes (LiveControls.switch_prompt, .steer),
        applied from the next block.

        Each step between two events (a block's forwards, its decode, the cache write) runs
        under `self.lock`, released only when the step has finished: a consumer abandoned or
        cancelled mid-block (a closed tab, a cancelled job) still owns the model until that
        block's forward ends, and the next run waits for it instead of interleaving its
        layers with the abandoned one's."""
        config = config or self.default_config
        first, switches = self.validate(prompt, seconds, config, seed)
        path = self.camera_path(camera)
        steps = self._steps(first, switches, seconds, int(seed), config, should_stop, path, controls)
        try:
            while True:
                with self.lock:
                    event = next(steps, None)
                if event is None:
                    return
                yield event
        finally:
            steps.close()  # the sampler empties its cache (no forward runs)

    def _steps(self, prompt, switches, seconds, seed, config, should_stop, path, controls) -> Iterator:
        # built inside the first locked step: installing the processors touches the model
        sampler = PackForcingSampler(self.backbone, config, seed=seed,
                                     decode_ahead=bool(self.fast and self.fast.decode_ahead))
        num_blocks = blocks_for(float(seconds), self.backbone, config)
        yield from sampler.stream(prompt, num_blocks, self.name, should_stop, self.describe_prompt(prompt), path,
                                  controls, switches)

    def __call__(self, prompt: str | Schedule, seconds: float, seed: int = 0, config: PackForcingConfig | None = None,
                 camera: str | CameraPath | None = None) -> PipelineOutput:
        frames, events = [], []
        for event in self.stream(prompt, seconds, seed, config, camera=camera):
            if isinstance(event, Frames):
                frames.append(event.frames)
            else:
                events.append(event)
        return PipelineOutput(frames=np.concatenate(frames), fps=self.fps, events=events)


__all__ = ["PackForcingPipeline", "PipelineOutput", "build_backbone", "Block"]
