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

from .attention import CacheSession, SelectionHook, install
from .backbone import Backbone
from .cache import BlockKV, KVCache
from .camera import CameraPath
from .compression import fit_lr_to_grid, lr_latent, token_span
from .config import PackForcingConfig
from .controls import LiveControls
from .decoding import Decoded, DecodeQueue
from .events import Block, Frames, RunEnd, RunStart, Switch
from .rope import apply_rotary, grid_positions, rope_cos_sin, to_device
from .selection import select_blocks, selection_change
from .switching import recache
from .video import to_uint8  # noqa: F401 (imported from here by callers)


def blocks_for(seconds: float, backbone: Backbone, config: PackForcingConfig) -> int:
    latent_frames = max(1, int(round(seconds * backbone.fps / backbone.codec.temporal_factor)))
    return math.ceil(latent_frames / config.block_frames)


def euler_step(x, x0, sigma, sigma_next):
    """The flow ODE step from noise level sigma to sigma_next, keeping x's predicted noise."""
    return x0 + (sigma_next / sigma) * (x - x0)


@dataclass
class Kept:
    """What moving a block on and re-writing it need, while it is cached: its clean
    latent, the selection it attended, its pixels until it is compressed (a Decoded while
    decoding ahead) and from then on the LR branch's input."""

    latent: torch.Tensor
    selected: list[int]
    pixels: torch.Tensor | Decoded | None = None
    lr: torch.Tensor | None = None


class PackForcingSampler:
    def __init__(self, backbone: Backbone, config: PackForcingConfig, seed: int = 0, decode_ahead: bool = False):
        self.backbone = backbone
        self.config = config
        self.seed = seed
        self.decode_ahead = decode_ahead  # decode block N while block N+1 denoises (decoding.py)
        model = backbone.transformer
        cfg = model.config
        self.num_layers = cfg.num_layers
        self.head_dim = cfg.attention_head_dim
        lat_h, lat_w = backbone.latent_hw
        self.latent_shape = (1, cfg.in_channels, config.block_frames, lat_h, lat_w)
        self.tokens_per_block = config.block_frames * backbone.tokens_per_latent_frame()
        self.grid = backbone.compressed_grid(config.block_frames)
        self.token_span = token_span(backbone.patch)  # where compressed tokens sit in RoPE
        self.compressed_tokens = math.prod(self.grid)
        if self.compressed_tokens == 0 and config.compresses_mid:
            raise ValueError(
                f"a {backbone.width}x{backbone.height} frame is too small to compress a block "
                f"(grid {self.grid}); use policy window or full"
            )
        if config.compression != "lr" and backbone.hr_compressor is None:
            raise ValueError(f"compression={config.compression!r} needs an HR compressor; this model has none, use 'lr'")
        self.cache = KVCache(config, self.num_layers, self.tokens_per_block, self.compressed_tokens)
        self.noise = torch.Generator().manual_seed(seed)
        self.selection_rng = torch.Generator().manual_seed(seed + 1)
        self.session = CacheSession(self.cache)
        self.slot, self.rope = install(model)
        self.kept: dict[int, Kept] = {}  # every cached block's (bounded by the cache)
        self._timesteps: dict[tuple, torch.Tensor] = {}
        self.camera: str | None = None  # the camera direction LiveControls holds (None: not steered live)

    def geometry(self) -> dict:
        b = self.backbone
        return {
            "tokens_per_latent_frame": b.tokens_per_latent_frame(),
            "tokens_per_block": self.tokens_per_block,
            "compressed_tokens_per_block": self.compressed_tokens,
            "bounded_context_tokens": self.cache.bounded_context_tokens(),
            "bytes_per_token": b.dims().bytes_per_token,
            "latent_shape": list(self.latent_shape[1:]),
            "pixel_size": [b.width, b.height],
            "fps": b.fps,
            "frames_per_latent": b.codec.temporal_factor,
            "seconds_per_block": self.config.block_frames * b.codec.temporal_factor / b.fps,
        }

    # --- one forward of the transformer -----------------------------------------------
    def _forward(self, latent, timestep, text, mode: str, pending=None, frame_offset=0.0, spacing=(1.0, 1.0, 1.0), center=(0.0, 0.0, 0.0)):
        self.slot.session = self.session  # this sampler's turn on the shared weights
        self.session.set_mode(mode, pending)
        self.rope.place(frame_offset, spacing, center)
        if self.backbone.on_frame is not None:
            self.backbone.on_frame(frame_offset)
        # one timestep per batch element (a float shares one; training passes a tensor)
        t = self._timestep(timestep, latent.device).expand(latent.shape[0])
        try:
            return self.backbone.transformer(latent, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        finally:
            self.session.set_mode("plain")

    def _timestep(self, timestep, device) -> torch.Tensor:
        """A float timestep as a device tensor made once per run (a copy per pass would
        make the host wait for the GPU at every pass)."""
        if torch.is_tensor(timestep):
            return timestep.to(device, torch.float32)
        key = (float(timestep), device)
        if key not in self._timesteps:
            self._timesteps[key] = to_device(torch.tensor(float(timestep)), device)
        return self._timesteps[key]

    # --- one block, step by step (sampling, training and probes all go through these) ---
    def begin_block(self, index: int, selection: list[int] | None = None, hook: SelectionHook | None = None) -> None:
        """The cache turns to block `index` and its mid blocks are chosen: by the policy
        now, or (dynamic) scored inside the block's first forward. `selection` attends
        exactly these mid blocks instead (a probe's override); `hook` is training's view
        into dynamic selection (required blocks, the scoring query)."""
        cache, cfg = self.cache, self.config
        cache.begin_block(index, float(index * cfg.block_frames))
        self.session.set_hook(hook)
        if selection is not None:
            cache.set_selection(selection, {m: 0.0 for m in cache.mid})
        elif not cache.selection_pending:
            cache.set_selection(select_blocks(list(cache.mid), cfg, generator=self.selection_rng))

    def forward(self, latent: torch.Tensor, timestep, text: torch.Tensor) -> torch.Tensor:
        """One denoising forward of the current block over its packed context: the
        predicted flow velocity. `timestep` is a float or one value per batch element."""
        return self._forward(latent, timestep, text, "denoise", frame_offset=self.cache.current_start)

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
        if index != self.cache.current:
            raise ValueError(f"block {index} is not the current block ({self.cache.current}); call begin_block({index}) first")
        cfg, b = self.config, self.backbone
        shape = (text.shape[0], *self.latent_shape[1:])  # one clip per prompt (a probe may batch them)
        x = to_device(torch.randn(shape, generator=self.noise), b.device).to(b.dtype)
        sigmas = cfg.sigmas
        guided = cfg.guidance_scale != 1.0
        # prompt and zeroed prompt in one batch. Both halves score the selection alike:
        # it is scored in the first layer's self-attention, before any prompt is read.
        if guided:
            text = torch.cat([text, torch.zeros_like(text)])
        for i, sigma in enumerate(sigmas):
            if guided:
                v, v_uncond = self.forward(torch.cat([x, x]), sigma * cfg.num_train_timesteps, text).chunk(2)
                v = v_uncond + cfg.guidance_scale * (v - v_uncond)
            else:
                v = self.forward(x, sigma * cfg.num_train_timesteps, text)
            x0 = (x.double() - sigma * v.double()).to(b.dtype)
            if i + 1 == len(sigmas):
                break
            if cfg.step_rule == "euler":
                x = euler_step(x.double(), x0.double(), sigma, sigmas[i + 1]).to(b.dtype)
            else:
                noise = to_device(torch.randn(shape, generator=self.noise), b.device).to(b.dtype)
                x = ((1 - sigmas[i + 1]) * x0.double() + sigmas[i + 1] * noise.double()).to(b.dtype)
        return x0

    def write_block(self, index: int, x0: torch.Tensor, text: torch.Tensor) -> BlockKV:
        start = float(index * self.config.block_frames)
        block = BlockKV(index=index, start_frame=start, tokens=self.tokens_per_block)
        self._forward(x0, 0.0, text, "write", block, frame_offset=start)
        return block

    def lr_input(self, pixels: torch.Tensor) -> torch.Tensor | None:
        """The LR branch's input for a block's pixels (None when the config has no LR branch)."""
        if self.config.compression not in ("lr", "hr+lr"):
            return None
        return fit_lr_to_grid(lr_latent(pixels, self.backbone.codec).to(self.backbone.dtype), self.grid, self.backbone.patch)

    def compress(self, block: BlockKV, latent: torch.Tensor, pixels: torch.Tensor, text: torch.Tensor) -> BlockKV:
        """Full-resolution block -> compressed tokens -> per-layer K/V."""
        return self._compress(block, latent, self.lr_input(pixels), text)

    def _compress(self, block: BlockKV, latent: torch.Tensor, lr: torch.Tensor | None, text: torch.Tensor) -> BlockKV:
        """compress() from the LR branch's input (lr_input(pixels)), which a re-cache keeps."""
        cfg, b = self.config, self.backbone
        model = b.transformer
        patch = b.patch
        if lr is None:
            grid_latent_shape = (1, self.latent_shape[1], self.grid[0] * patch[0], self.grid[1] * patch[1], self.grid[2] * patch[2])
            lr = torch.zeros(grid_latent_shape, device=b.device, dtype=b.dtype)
        hr = b.hr_compressor(latent.to(b.dtype)) if cfg.compression in ("hr", "hr+lr") else None
        out = BlockKV(index=block.index, start_frame=block.start_frame, tokens=self.compressed_tokens, compressed=True)
        center = tuple((s - 1) / 2 for s in self.token_span)

        def add_hr(module, inputs, output):
            if hr is None:
                return output
            return hr if cfg.compression == "hr" else output + hr

        if cfg.kv_source == "context-pass":
            handle = model.patch_embedding.register_forward_hook(add_hr)
            try:
                self._forward(lr, 0.0, text, "compressed", out, block.start_frame, self.token_span, center)
            finally:
                handle.remove()
            return out
        # projection: each layer's own K/V projections straight from the compressed tokens.
        tokens = add_hr(None, None, model.patch_embedding(lr)).flatten(2).transpose(1, 2)
        cos, sin = rope_cos_sin(*grid_positions(*self.grid, block.start_frame, self.token_span, center), self.head_dim)
        for layer, blk in enumerate(model.blocks):
            attn = blk.attn1
            k_raw = attn.norm_k(attn.to_k(tokens)).unflatten(2, (attn.heads, -1))
            v = attn.to_v(tokens).unflatten(2, (attn.heads, -1))
            out.keys.append(apply_rotary(k_raw, cos.to(tokens.device), sin.to(tokens.device)))
            out.values.append(v)
            if layer == 0:
                out.key_sum = k_raw.sum(1)
        return out

    # --- the generator ------------------------------------------------------------------
    # torch's decorator enters no_grad for each step and leaves it at every yield, so
    # interleaved streams (the ablation view) never restore each other's grad mode
    @torch.no_grad()
    def stream(self, prompt: str, num_blocks: int, model_name: str, should_stop: Callable[[], bool] | None = None, understood=None,
               camera: CameraPath | None = None, controls: LiveControls | None = None, switches: dict[int, str] | None = None) -> Iterator:
        """camera: the path of a model with a camera; controls: polled once per block (prompt
        switch, steering); switches: {block: prompt} from that block on (a prompt queued in
        controls wins over a scheduled one at the same block)."""
        cfg, b, cache = self.config, self.backbone, self.cache
        t_run = time.perf_counter()
        yield RunStart(prompt=prompt, seed=self.seed, model=model_name, config=cfg.to_dict(), geometry=self.geometry(), num_blocks=num_blocks, understood_words=list(understood or []))
        decoder = DecodeQueue(b.codec, self.decode_ahead, b.device)
        bpt = b.dims().bytes_per_token
        frames_total, done, stopped = 0, 0, False
        waiting: deque = deque()  # (Decoded, trace fields) of blocks whose frames are not out yet
        try:
            text = b.encode_prompt(prompt).to(b.device, b.dtype)
            for index in range(num_blocks):
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                switch = self._poll(index, switches, controls)
                if switch is not None:
                    frames_total, done = yield from self._release(waiting, 0, frames_total, done)  # the old prompt's blocks first
                    t0 = time.perf_counter()
                    prompt, text = switch, b.encode_prompt(switch).to(b.device, b.dtype)
                    recached = self.recache(text, cfg.recache)
                    yield Switch(block=index, prompt=prompt, recache=cfg.recache, recached=recached, seconds=time.perf_counter() - t0)
                t0 = time.perf_counter()
                view = self.move_camera(index, prompt, camera)
                # 1. selection (dynamic is scored inside the first forward)
                self.begin_block(index)
                # 2-3. denoise, then write the clean block into the cache
                x0 = self.denoise_block(index, text)
                snapshot = self._snapshot()
                block = self.write_block(index, x0, text)
                t1 = time.perf_counter()
                # 4. pixels: decoded now, or queued while the next block denoises
                decoded = decoder.submit(x0)
                t2 = time.perf_counter()
                # 5. the cache moves on
                self.admit(block, x0, decoded, text)
                t3 = time.perf_counter()
                trace = dict(snapshot, kv_bytes=cache.kv_bytes(), full_cache_bytes=(index + 1) * self.tokens_per_block * bpt,
                             seconds=t3 - t0, evicted=list(cache.evicted), timings={"transformer": t1 - t0, "compress": t3 - t2}, camera=view,
                             prompt=prompt)
                waiting.append((decoded, trace))
                # 6. frames, then trace, of the blocks whose decode is due; the first block's
                # at once (the first frame's latency is the inline one)
                frames_total, done = yield from self._release(waiting, decoder.lag if index else 0, frames_total, done)
            frames_total, done = yield from self._release(waiting, 0, frames_total, done)
        finally:
            decoder.close()
            self.reset()
        yield RunEnd(blocks=done, seconds=time.perf_counter() - t_run, stopped=stopped)

    def _release(self, waiting: deque, keep: int, frames_total: int, done: int):
        """Frames, then trace, of the waiting blocks but the last `keep`, in block order."""
        fps = self.backbone.fps
        while len(waiting) > keep:
            decoded, trace = waiting.popleft()
            frames = decoded.frames()
            frames_total += frames.shape[0]
            done = trace["block"] + 1
            yield Frames(block=trace["block"], frames=frames, fps=fps)
            timings = trace.pop("timings")
            timings = {"transformer": timings["transformer"], "decode": decoded.seconds, "compress": timings["compress"]}
            yield Block(**trace, timings=timings, video_seconds=frames_total / fps, frames_total=frames_total)
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

    def admit(self, block: BlockKV, latent: torch.Tensor, pixels: torch.Tensor, text: torch.Tensor) -> None:
        """The written block joins the cache; the block leaving the recent window goes
        to the mid bank (compressed from its kept latent and pixels, or whole for
        `full`). Sampling, training and the recall probe all move the cache this way."""
        cache = self.cache
        cache.add_block(block)
        sink = block.index in cache.sink  # sinks are never compressed
        self.kept[block.index] = Kept(latent, list(cache.selected), None if sink else pixels)
        self.retire(text)
        held = set(cache.sink) | set(cache.mid) | set(cache.recent)
        for gone in [k for k in self.kept if k not in held]:
            del self.kept[gone]

    def retire(self, text: torch.Tensor) -> None:
        """The block leaving the recent window, if any, goes to the mid bank (or away)."""
        cache, cfg = self.cache, self.config
        leaving = cache.pop_overflow()
        if leaving is None:
            return
        kept = self.kept[leaving.index]
        if kept.pixels is not None:  # its LR input replaces its pixels, which nothing needs after
            if cfg.compresses_mid:  # window drops the block and full keeps it whole: neither needs an LR input
                px = kept.pixels.pixels() if isinstance(kept.pixels, Decoded) else kept.pixels  # decoded ahead: ready by now
                kept.lr = self.lr_input(px)
            kept.pixels = None
        if cfg.policy == "full":
            cache.archive(leaving)
        elif cfg.compresses_mid:
            cache.archive(self._compress(leaving, kept.latent, kept.lr, text))

    def recache(self, text: torch.Tensor, mode: str) -> list[int]:
        """Re-write the cached blocks `mode` names (config.recache) under `text`; their indices."""
        return recache(self, text, mode)

    def reset(self) -> None:
        """Empty the cache and drop the kept blocks (the end of a run or a training clip)."""
        self.cache.clear()
        self.kept.clear()
        self.session.set_hook(None)
        self.camera = None

    def _snapshot(self) -> dict:
        """The cache as the current block saw it (taken before the block joins it)."""
        cache = self.cache
        attended = cache.attended()
        return dict(
            block=cache.current,
            sink=list(cache.sink),
            mid_bank=list(cache.mid),
            mid_selected=list(cache.selected),
            recent=list(cache.recent),
            current=cache.current,
            selection_scores=dict(cache.scores),
            rope_shift={b.index: cache.shifts.get(b.index, 0.0) for b in attended} | {cache.current: 0.0},
            context_tokens=cache.context_tokens(),
            positions={b.index: b.start_frame for b in list(cache.sink.values()) + list(cache.mid.values()) + list(cache.recent.values())}
            | {cache.current: cache.current_start},
            tokens=cache.partition_tokens(),
            selection_change=selection_change(cache.previous_selected, cache.selected),
        )
