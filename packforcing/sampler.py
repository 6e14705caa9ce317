"""The streaming PackForcing sampler: a generator over blocks that yields trace events.

Per block (Self-Forcing's causal few-step schedule):
  1. choose the mid blocks to attend (dynamic: scored inside the first step's first layer);
  2. denoise: x0 = x_t - sigma * v at each warped timestep, re-noise to the next one;
  3. a clean pass at t=0 writes the block's K/V into the cache;
  4. decode its pixels (streaming decoder) and yield them;
  5. the block that leaves the recent window is compressed into the mid bank (or kept
     whole by `full`, or dropped by `window`), evicting the oldest if the bank is full;
  6. yield the block's trace event.
Before a block, a prompt switch (scheduled, or from LiveControls) re-writes the cached
blocks config.recache names under the new prompt and yields a Switch event.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .attention import SelectionHook
from .backbone import Backbone
from .block_memory import BlockMemory, CacheSnapshot
from .cache import BlockKV
from .camera import CameraPath
from .config import PackForcingConfig
from .controls import LiveControls
from .decoding import Decoded, DecodeQueue
from .events import Block, Frames, RunEnd, RunStart, Switch
from .rope import to_device
from .scheduler import FewStepScheduler


def blocks_for(seconds: float, backbone: Backbone, config: PackForcingConfig) -> int:
    latent_frames = max(1, int(round(seconds * backbone.fps / backbone.codec.temporal_factor)))
    return math.ceil(latent_frames / config.block_frames)


@dataclass
class BlockRecord:
    """A generated block waiting for its frames: what its trace event will report."""

    decoded: Decoded
    cache: CacheSnapshot
    prompt: str
    camera: dict | None
    kv_bytes: int
    full_cache_bytes: int
    evicted: list[int]
    seconds: float
    transformer_seconds: float
    compress_seconds: float

    def event(self, frames_total: int, fps: int) -> Block:
        timings = {"transformer": self.transformer_seconds, "decode": self.decoded.seconds,
                   "compress": self.compress_seconds}
        return Block(**vars(self.cache), kv_bytes=self.kv_bytes, full_cache_bytes=self.full_cache_bytes,
                     seconds=self.seconds, evicted=self.evicted, timings=timings, camera=self.camera,
                     prompt=self.prompt, video_seconds=frames_total / fps, frames_total=frames_total)


class PackForcingSampler:
    def __init__(self, backbone: Backbone, config: PackForcingConfig, seed: int = 0, decode_ahead: bool = False):
        self.backbone = backbone
        self.config = config
        self.seed = seed
        self.decode_ahead = decode_ahead  # decode block N while block N+1 denoises (decoding.py)
        cfg = backbone.transformer.config
        lat_h, lat_w = backbone.latent_hw
        self.latent_shape = (1, cfg.in_channels, config.block_frames, lat_h, lat_w)
        self.memory = BlockMemory(backbone, config, seed=seed + 1)  # the cache and its lifecycle
        self.scheduler = FewStepScheduler.from_config(config)
        self.noise = torch.Generator().manual_seed(seed)
        self.camera: str | None = None  # the camera direction LiveControls holds (None: not steered live)

    def geometry(self) -> dict:
        b, memory = self.backbone, self.memory
        return {
            "tokens_per_latent_frame": b.tokens_per_latent_frame(),
            "tokens_per_block": memory.tokens_per_block,
            "compressed_tokens_per_block": memory.compressed_tokens,
            "bounded_context_tokens": memory.cache.bounded_context_tokens(),
            "bytes_per_token": b.dims().bytes_per_token,
            "latent_shape": list(self.latent_shape[1:]),
            "pixel_size": [b.width, b.height],
            "fps": b.fps,
            "frames_per_latent": b.codec.temporal_factor,
            "seconds_per_block": self.config.block_frames * b.codec.temporal_factor / b.fps,
        }

    # --- one block, step by step (sampling, training and probes all go through these) ---
    def begin_block(self, index: int, selection: list[int] | None = None, hook: SelectionHook | None = None) -> None:
        """The cache turns to block `index` and its mid blocks are chosen (BlockMemory.begin)."""
        self.memory.begin(index, selection, hook)

    def forward(self, latent: torch.Tensor, timestep, text: torch.Tensor) -> torch.Tensor:
        """One denoising forward of the current block over its packed context: the
        predicted flow velocity. `timestep` is a float or one value per batch element."""
        return self.memory.passes.run(latent, timestep, text, "denoise", self.memory.cache.current_start)

    def move_camera(self, index: int, prompt: str, path: CameraPath | None = None) -> dict | None:
        """Where block `index` looks (models with a camera): the direction steered live,
        else the path's, else the model's default for the prompt. None for camera-less models."""
        if self.backbone.move_camera is None:
            return None
        seconds = index * self.config.block_frames * self.backbone.codec.temporal_factor / self.backbone.fps
        direction = self.camera or (path.direction_at(seconds) if path is not None else None)
        return self.backbone.move_camera(index, direction, prompt)

    def denoise_block(self, index: int, text: torch.Tensor) -> torch.Tensor:
        """The current block sampled from noise with the model's schedule and guidance: x0."""
        current = self.memory.cache.current
        if index != current:
            raise ValueError(f"block {index} is not the current block ({current}); call begin_block({index}) first")
        steps, b = self.scheduler, self.backbone
        shape = (text.shape[0], *self.latent_shape[1:])  # one clip per prompt (a probe may batch them)
        x = to_device(torch.randn(shape, generator=self.noise), b.device).to(b.dtype)
        # prompt and zeroed prompt in one batch. Both halves score the selection alike:
        # it is scored in the first layer's self-attention, before any prompt is read.
        if steps.guided:
            text = torch.cat([text, torch.zeros_like(text)])
        for i in range(len(steps.sigmas)):
            if steps.guided:
                v = steps.guide(self.forward(torch.cat([x, x]), steps.timestep(i), text))
            else:
                v = self.forward(x, steps.timestep(i), text)
            noise = None
            if steps.needs_noise(i):
                noise = to_device(torch.randn(shape, generator=self.noise), b.device).to(b.dtype)
            x, x0 = steps.step(x, v, i, noise)
        return x0

    def write_block(self, index: int, x0: torch.Tensor, text: torch.Tensor) -> BlockKV:
        """The block's clean pass: its K/V, for BlockMemory.admit."""
        return self.memory.write(index, x0, text)

    # --- the generator ------------------------------------------------------------------
    # torch's decorator enters no_grad for each step and leaves it at every yield, so
    # interleaved streams (the ablation view) never restore each other's grad mode
    @torch.no_grad()
    def stream(self, prompt: str, num_blocks: int, model_name: str, should_stop: Callable[[], bool] | None = None,
               understood=None, camera: CameraPath | None = None, controls: LiveControls | None = None,
               switches: dict[int, str] | None = None) -> Iterator:
        """camera: the path of a model with a camera; controls: polled once per block (prompt
        switch, steering); switches: {block: prompt} from that block on (a prompt queued in
        controls wins over a scheduled one at the same block)."""
        cfg, b = self.config, self.backbone
        t_run = time.perf_counter()
        yield RunStart(prompt=prompt, seed=self.seed, model=model_name, config=cfg.to_dict(), geometry=self.geometry(),
                       num_blocks=num_blocks, understood_words=list(understood or []))
        decoder = DecodeQueue(b.codec, self.decode_ahead, b.device)
        frames_total, done, stopped = 0, 0, False
        waiting: deque[BlockRecord] = deque()  # blocks whose frames are not out yet
        try:
            text = b.encode_prompt(prompt).to(b.device, b.dtype)
            for index in range(num_blocks):
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                switch = self._poll(index, switches, controls)
                if switch is not None:
                    # the old prompt's blocks first
                    frames_total, done = yield from self._release(waiting, 0, frames_total, done)
                    t0 = time.perf_counter()
                    prompt, text = switch, b.encode_prompt(switch).to(b.device, b.dtype)
                    recached = self.memory.recache(text, cfg.recache)
                    yield Switch(block=index, prompt=prompt, recache=cfg.recache, recached=recached,
                                 seconds=time.perf_counter() - t0)
                waiting.append(self._block(index, prompt, text, camera, decoder))
                # frames, then trace, of the blocks whose decode is due; the first block's
                # at once (the first frame's latency is the inline one)
                frames_total, done = yield from self._release(waiting, decoder.lag if index else 0, frames_total, done)
            frames_total, done = yield from self._release(waiting, 0, frames_total, done)
        finally:
            decoder.close()
            self.memory.reset()
            self.camera = None
        yield RunEnd(blocks=done, seconds=time.perf_counter() - t_run, stopped=stopped)

    def _block(self, index: int, prompt: str, text: torch.Tensor, camera: CameraPath | None,
               decoder: DecodeQueue) -> BlockRecord:
        """One block generated and admitted; its pixels decoded now or queued (decode ahead)."""
        memory = self.memory
        t0 = time.perf_counter()
        view = self.move_camera(index, prompt, camera)
        self.begin_block(index)  # dynamic selection is scored inside the first forward
        x0 = self.denoise_block(index, text)
        snapshot = memory.snapshot()
        block = self.write_block(index, x0, text)
        t1 = time.perf_counter()
        decoded = decoder.submit(x0)
        t2 = time.perf_counter()
        memory.admit(block, x0, decoded, text)
        t3 = time.perf_counter()
        full_bytes = (index + 1) * memory.tokens_per_block * self.backbone.dims().bytes_per_token
        cache = memory.cache
        return BlockRecord(decoded, snapshot, prompt, view, cache.kv_bytes(), full_bytes, list(cache.evicted),
                           seconds=t3 - t0, transformer_seconds=t1 - t0, compress_seconds=t3 - t2)

    def _release(self, waiting: deque[BlockRecord], keep: int, frames_total: int, done: int):
        """Frames, then trace, of the waiting blocks but the last `keep`, in block order."""
        fps = self.backbone.fps
        while len(waiting) > keep:
            record = waiting.popleft()
            frames = record.decoded.frames()
            frames_total += frames.shape[0]
            done = record.cache.block + 1
            yield Frames(block=record.cache.block, frames=frames, fps=fps)
            yield record.event(frames_total, fps)
        return frames_total, done

    def _poll(self, index: int, switches: dict[int, str] | None, controls: LiveControls | None) -> str | None:
        """The prompt switched to before block `index`, if any. Reads the live controls
        once per block and keeps the camera direction they hold."""
        prompt = (switches or {}).get(index)
        if controls is not None:
            live, held = controls.poll()
            self.camera = held or self.camera
            prompt = live or prompt
        return prompt
