"""Callbacks of the studio. Plain Python: the UI module wires them to gradio components."""

from __future__ import annotations

import math
import os
import re
import tempfile
import threading
import time

import numpy as np
from PIL import Image

from packforcing import registry
from packforcing.ablation import ablation_configs
from packforcing.config import MAX_MID_CAPACITY, MAX_SINK_FRAMES, MAX_TOP_K, PackForcingConfig, check_number, shown
from packforcing.controls import LiveControls
from packforcing.events import Block, Frames, RunEnd, RunStart, Switch, TraceWriter
from packforcing.memory import kv_curve, memory_table
from packforcing.tracefile import read_trace
from packforcing.video import write_mp4
from visualizers import calculator_figure, empty_figure, figures_at
from visualizers.camera import camera_figure
from visualizers.narration import narration_at

DISPLAY_SIZE = 256  # frames are upscaled (nearest) to about this many pixels for the browser
# Panels are redrawn at most this often (and after the last block): drawing them costs the
# server more than a small model's block (0.27 s against 0.19 s on 2 cores), and the browser too.
PANEL_SECONDS = 1.0
_pipelines: dict = {}
_lock = threading.Lock()


def plain(text) -> str:
    """Text for a Markdown component, shown as typed: no HTML, no emphasis, no links, no
    LaTeX, one line."""
    text = " ".join(str(text).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~$:])", r"\\\1", text)


def check_model(name) -> str:
    """`name` if it is a model that can run here, else a plain ValueError."""
    usable = [m for m, reason in registry.available_models().items() if reason is None]
    if not isinstance(name, str) or name not in usable:
        raise ValueError(f"model {shown(name)} is not available here; choose one of {', '.join(usable)}")
    return name


def get_pipeline(name: str):
    """Load a model on first use only (never at import time), then keep it."""
    from packforcing.pipeline import PackForcingPipeline

    check_model(name)
    with _lock:
        if name not in _pipelines:
            _pipelines[name] = PackForcingPipeline.from_name(name)
        return _pipelines[name]


def cache_numbers(sink_frames, top_k, mid_capacity) -> dict:
    """The cache's three sizes as the UI or an API sent them, checked."""
    return dict(sink_frames=check_number("sink_frames", sink_frames, 0, MAX_SINK_FRAMES, integer=True),
                top_k=check_number("top_k", top_k, 0, MAX_TOP_K, integer=True),
                mid_capacity=check_number("mid_capacity", mid_capacity, 0, MAX_MID_CAPACITY, integer=True))


def build_config(model: str, sink_frames, top_k, mid_capacity, policy, rope_repair, compression,
                 recache=None) -> PackForcingConfig:
    if not isinstance(rope_repair, bool):
        raise ValueError(f"rope_repair must be true or false; got {shown(rope_repair)}")
    base = registry.get(check_model(model)).default_config
    return base.replace(
        **cache_numbers(sink_frames, top_k, mid_capacity), policy=policy, rope_repair=rope_repair,
        compression=compression, recache=base.recache if recache is None else recache,
    )


def upscale(frames: np.ndarray) -> np.ndarray:
    scale = max(1, DISPLAY_SIZE // frames.shape[1])
    return frames.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else frames


class Run:
    """One generation: streams (segment path, preview, figures, status) after every block."""

    def __init__(self, model: str, prompt: str, seconds: float, seed: int, config: PackForcingConfig,
                 workdir: str | None = None, stop: threading.Event | None = None,
                 camera: str | None = None, controls: LiveControls | None = None,
                 panel_seconds: float = PANEL_SECONDS):
        self.pipe = get_pipeline(model)
        self.pipe.validate(prompt, seconds, config, seed)
        self.camera, self.controls = self.pipe.camera_path(camera), controls
        self.prompt, self.seconds, self.seed, self.config = prompt, float(seconds), int(seed), config
        self.dir = None
        if workdir:
            self.use_folder(workdir)
        self.events: list = []
        self.frames: list[np.ndarray] = []
        self.projection = kv_curve(self.seconds, config=config)
        self.stop_requested = stop or threading.Event()
        self.switched = ""  # the status line's note of the last prompt switch
        self.panel_seconds = panel_seconds

    def use_folder(self, folder: str | None) -> None:
        """Where the run writes its files (a new temporary folder if None). The studio gives
        the folder only once the request is valid: a new folder retires the session's older ones."""
        self.dir = folder or tempfile.mkdtemp(prefix="packforcing-run-")
        os.makedirs(self.dir, exist_ok=True)
        self.trace_path = os.path.join(self.dir, "trace.jsonl")
        self.video_path = os.path.join(self.dir, "video.mp4")

    def updates(self):
        """Yields dicts with a status: per block one with its segment, preview and narration,
        then one with the figures (and camera) when `panel_seconds` have passed since the last
        or the block is the last; the end's adds done, video, trace (and panels not yet drawn)."""
        if self.dir is None:
            self.use_folder(None)
        self._started, self._panels_at, self._panels_stale = time.perf_counter(), -math.inf, False
        with TraceWriter(self.trace_path) as trace:
            for event in self.pipe.stream(self.prompt, self.seconds, self.seed, self.config,
                                          should_stop=self.stop_requested.is_set,
                                          camera=self.camera, controls=self.controls):
                trace.write(event)
                if isinstance(event, Frames):
                    self._pending = self._write_segment(event)
                    continue
                self.events.append(event)
                if isinstance(event, RunStart):
                    words = plain(", ".join(event.understood_words) or "none")
                    yield {"status": f"Generating blocks 0 to {event.num_blocks - 1} with **{plain(event.model)}** "
                                     f"· understood: {words}"}
                elif isinstance(event, Switch):
                    done = (f"re-cached {len(event.recached)} blocks in {event.seconds:.2f} s" if event.recached
                            else f"re-cache {event.recache}")
                    self.switched = f" · prompt switched before block {event.block} ({done})"
                elif isinstance(event, Block):
                    update = self._block_update(event)
                    yield update  # the segment goes out before the panels are drawn
                    if self._panels_due(event):
                        yield {"status": update["status"], **self._panels()}
                    else:
                        self._panels_stale = True
                elif isinstance(event, RunEnd):
                    yield self._end_update(event)

    def _write_segment(self, event: Frames) -> tuple[str, str]:
        big = upscale(event.frames)
        self.frames.append(event.frames)
        segment = os.path.join(self.dir, f"segment_{event.block:04d}.ts")
        write_mp4(big, segment, event.fps)
        # a file in the run's folder, not an array: Gradio would cache a copy of every
        # preview, outside the folders the sessions clean up
        preview = os.path.join(self.dir, f"preview_{event.block:04d}.png")
        Image.fromarray(big[-1]).save(preview)
        return segment, preview

    def _block_update(self, event: Block) -> dict:
        segment, preview = self._pending
        status = (f"Block {event.block} · {event.video_seconds:.0f} s of video "
                  f"in {time.perf_counter() - self._started:.1f} s · "
                  f"attending {event.context_tokens:,} tokens · KV {event.kv_bytes / 1024:,.0f} KB "
                  f"(a full cache: {event.full_cache_bytes / 1024:,.0f} KB)") + self.switched
        if event.camera is not None:
            status += f" · camera {event.camera['direction']} at {event.camera['x']:.0f}"
        return {"segment": segment, "preview": preview, "status": status,
                "narration": plain(narration_at(self.events))}

    def _panels_due(self, event: Block) -> bool:
        last = event.block == self.events[0].num_blocks - 1
        return last or time.perf_counter() - self._panels_at >= self.panel_seconds

    def _panels(self) -> dict:
        """The four panels (and the camera's, for a model with a camera) after the latest block."""
        panels = {"figures": figures_at(self.events, None, self.projection)}
        if self.pipe.has_camera:  # the camera panel is hidden otherwise: nothing to draw into it
            panels["camera"] = camera_figure(self.events)
        self._panels_at, self._panels_stale = time.perf_counter(), False
        return panels

    def _end_update(self, event: RunEnd) -> dict:
        if self.frames:
            write_mp4(np.concatenate(self.frames), self.video_path, self.pipe.fps,
                      max(1, DISPLAY_SIZE // self.frames[0].shape[1]))
        verb = "Stopped" if event.stopped else "Done"
        update = {"status": f"{verb}: {event.blocks} blocks in {event.seconds:.1f} s", "done": True,
                  "video": self.video_path if self.frames else None, "trace": self.trace_path}
        return update | self._panels() if self._panels_stale else update


def calculator(width, height, fps, seconds, sink_frames, top_k, mid_capacity):
    """Memory calculator tab: (markdown table, figure) or an error message."""
    try:
        t = memory_table(seconds, width, height, fps,
                         PackForcingConfig(**cache_numbers(sink_frames, top_k, mid_capacity)))
    except ValueError as e:
        return f"**Error:** {plain(e)}", empty_figure(str(e))
    gb = lambda b: f"{b / 1e9:,.2f} GB"  # noqa: E731
    rows = [
        ("tokens per latent frame", f"{t['tokens_per_latent_frame']:,}"),
        ("tokens per block", f"{t['tokens_per_block']:,}"),
        ("compressed tokens per block", f"{t['compressed_tokens_per_block']:,}"),
        ("bounded attention context", f"{t['context_tokens']:,} tokens"),
        ("full cache", f"{t['full_cache_tokens']:,} tokens = {gb(t['full_cache_bytes'])}"),
        ("PackForcing (dynamic)", gb(t["kv_bytes_by_policy"]["dynamic"])),
        ("PackForcing (FIFO)", gb(t["kv_bytes_by_policy"]["fifo"])),
        ("window (sink + recent)", gb(t["kv_bytes_by_policy"]["window"])),
        ("bytes per token (K+V, all layers)", f"{t['bytes_per_token']:,}"),
    ]
    table = "| quantity | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return table, calculator_figure(t)


def load_trace(path):
    """Trace replay: (events, index of the last block), or a ValueError with a plain message.
    The file is checked before anything is built from it (packforcing.tracefile)."""
    events = read_trace(path)
    return events, sum(isinstance(e, Block) for e in events) - 1


def replay_figures(events, block):
    """The four panels after `block` of a checked trace. The real-model projection spans the
    blocks the trace really holds, at the trace's own seconds per block."""
    if not events:
        return tuple(empty_figure("Upload a trace to replay it") for _ in range(4))
    run, blocks = events[0], [e for e in events if isinstance(e, Block)]
    block = check_number("block", block, 0, len(blocks) - 1, integer=True)
    seconds = max(1.0, len(blocks) * run.geometry["seconds_per_block"])
    return figures_at(events, block, kv_curve(seconds, config=PackForcingConfig.from_dict(run.config)))


def per_block(updates):
    """A run's updates with each block's panels merged into its segment's update, so that two
    runs side by side advance one block per step."""
    held = None
    for update in updates:
        if held is not None and "figures" in update and "segment" not in update and "done" not in update:
            update, held = held | update, None
        if held is not None:
            yield held
        held = update
    if held is not None:
        yield held


def ablation_presets(model: str) -> dict[str, PackForcingConfig]:
    """The ablation lab's named configurations, built on the model's own defaults."""
    base = registry.get(check_model(model)).default_config
    # the same switch with and without re-writing the cache (Switch at / to, in the view)
    return ablation_configs(base) | {"dynamic, re-cache all": base.replace(recache="all"),
                                     "dynamic, no re-cache": base.replace(recache="none")}


class AblationRun:
    """Two configurations on the same prompt and seed, streamed block by block in lockstep.
    Both samplers share the model's weights (each claims it per forward), so nothing is loaded twice."""

    def __init__(self, model: str, prompt: str, seconds: float, seed: int, preset_a: str, preset_b: str,
                 stop: threading.Event | None = None, switch_at=None, switch_to: str = ""):
        presets = ablation_presets(model)
        for preset in (preset_a, preset_b):
            if not isinstance(preset, str) or preset not in presets:
                raise ValueError(f"configuration {shown(preset)} is not known; choose one of {', '.join(presets)}")
        self.names = (preset_a, preset_b)
        self.stop_requested = stop or threading.Event()
        if switch_to and switch_to.strip():  # both sides switch the same prompt at the same time
            prompt = [(0.0, prompt), (check_number("switch at", switch_at, 0, float(seconds)), switch_to)]
        self.runs = [Run(model, prompt, seconds, seed, presets[p], stop=self.stop_requested) for p in self.names]
        self.rows: list[dict[str, str]] = []  # each side's comparison rows, once the pair has ended

    def use_folder(self, folder: str) -> None:
        """Both sides write into one folder (a/ and b/): one run folder per ablation."""
        for run, side in zip(self.runs, ("a", "b")):
            run.use_folder(os.path.join(folder, side))

    def updates(self):
        """Yields (update of A or None, update of B or None, comparison markdown or None)."""
        streams = [per_block(run.updates()) for run in self.runs]
        alive = [True, True]
        while any(alive):
            step = [None, None]
            for side, stream in enumerate(streams):
                if alive[side]:
                    step[side] = next(stream, None)
                    alive[side] = step[side] is not None
            done = not any(alive)
            yield step[0], step[1], self.comparison() if done else None

    def comparison(self) -> str:
        """Markdown table of the metrics of both videos (its evaluator's, when the model has one)."""
        rows = self.rows = [self._scores(run) for run in self.runs]  # kept: a lesson quotes its row
        keys = [k for k in rows[0] if k in rows[1]]
        header = f"| | {self.names[0]} | {self.names[1]} |\n|---|---|---|\n"
        return header + "\n".join(f"| {k} | {rows[0][k]} | {rows[1][k]} |" for k in keys)

    @staticmethod
    def _scores(run: Run) -> dict[str, str]:
        blocks = [e for e in run.events if isinstance(e, Block)]
        out = {}
        evaluator = registry.get(run.pipe.name).evaluator
        if run.frames and blocks and evaluator is not None:
            out.update(evaluator.report(evaluator.score(np.concatenate(run.frames), blocks, blocks[0].prompt,
                                                        run.seed)))
        for switch in (e for e in run.events if isinstance(e, Switch)):
            out[f"switch before block {switch.block}"] = (
                f"re-cached {len(switch.recached)} blocks in {switch.seconds:.2f} s" if switch.recached
                else "no re-cache")
            after = [b for b in blocks if b.block >= switch.block]
            if evaluator is not None and after:
                start = next((b.frames_total for b in blocks if b.block == switch.block - 1), 0)
                score = evaluator.score(np.concatenate(run.frames)[start:], after, switch.prompt,
                                        run.seed).get("faithfulness")
                out["faithfulness to the new prompt, after the switch"] = "n/a" if score is None else f"{score:.3f}"
        if blocks:
            out["KV bytes at the end"] = f"{blocks[-1].kv_bytes / 1024:,.0f} KB"
            out["attended tokens (last block)"] = f"{blocks[-1].context_tokens:,}"
            out["seconds of video per second"] = f"{blocks[-1].video_seconds / sum(b.seconds for b in blocks):.2f}"
        return out
