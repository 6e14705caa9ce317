"""python -m packforcing {memory, generate, ablate}: bad arguments exit 2 with one line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import COMPRESSIONS, POLICIES, RECACHE_MODES, PackForcingConfig

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".ts")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m packforcing", description="PackForcing: bounded-memory streaming video generation")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    m = sub.add_parser("memory", help="token and byte arithmetic (no model)")
    m.add_argument("--seconds", type=float, required=True)
    m.add_argument("--width", type=int, default=832)
    m.add_argument("--height", type=int, default=480)
    m.add_argument("--fps", type=int, default=16)
    _method_args(m)
    m.add_argument("--json", action="store_true", help="print JSON")

    g = sub.add_parser("generate", help="generate a video and its trace")
    g.add_argument("--prompt", required=True)
    g.add_argument("--seconds", type=float, default=10.0)
    g.add_argument("--out", default="video.mp4")
    g.add_argument("--trace", default=None, help="write trace events as JSONL")
    g.add_argument("--model", default=None,
                   help="a model of packforcing.registry, e.g. embedded, tiny-random, wan-1.3b (default: the best one "
                   "ready here)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None)
    g.add_argument("--scale", type=int, default=1, help="upscale factor for the written mp4")
    g.add_argument("--camera", default=None, help="camera path of a model with a camera: direction:seconds segments, "
                   "e.g. right:8,left:8 (directions: left, still, right; default: the prompt's pan)")
    g.add_argument("--switch", action="append", default=[], metavar="SECONDS:PROMPT",
                   help='switch the prompt from SECONDS on (repeatable), e.g. --switch "8:a green square"')
    g.add_argument("--recache", help=f"what a switch re-writes under the new prompt: {', '.join(RECACHE_MODES)}")
    g.add_argument("--no-recache", action="store_true", help="same as --recache none")
    g.add_argument("--compile", action="store_true",
                   help="fast path: torch.compile the transformer, decode one block ahead (for a GPU; off by default)")
    _method_args(g)

    a = sub.add_parser("ablate", help="every memory policy on the same prompts and seeds, scored from pixels")
    a.add_argument("--seconds", type=float, default=32.0)
    a.add_argument("--seeds", type=int, default=2)
    a.add_argument("--model", default=None, help="default: the first model with an evaluator that can run here")
    a.add_argument("--json", action="store_true")
    return p


def _method_args(p):
    # Unset options keep the model's own default config (the paper's for the real model).
    p.add_argument("--policy", help=f"one of {', '.join(POLICIES)}")
    p.add_argument("--sink-frames", type=int)
    p.add_argument("--top-k", type=int)
    p.add_argument("--mid-capacity", type=int)
    p.add_argument("--compression", help=f"one of {', '.join(COMPRESSIONS)}")
    p.add_argument("--kv-source", help="context-pass | projection")
    p.add_argument("--no-rope-repair", action="store_true")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance (1 = off)")


def _config(args, base: PackForcingConfig = PackForcingConfig()) -> PackForcingConfig:
    chosen = {
        "policy": args.policy,
        "sink_frames": args.sink_frames,
        "top_k": args.top_k,
        "mid_capacity": args.mid_capacity,
        "compression": args.compression,
        "kv_source": args.kv_source,
        "rope_repair": False if args.no_rope_repair else None,
        "guidance_scale": args.guidance_scale,
        "recache": _recache(args),
    }
    return base.replace(**{k: v for k, v in chosen.items() if v is not None})


def _recache(args) -> str | None:
    recache, off = getattr(args, "recache", None), getattr(args, "no_recache", False)
    if off and recache not in (None, "none"):
        raise ValueError(f"--no-recache contradicts --recache {recache}; give one of them")
    return "none" if off else recache


def _schedule(prompt: str, switches: list[str]) -> str | list[tuple[float, str]]:
    """--prompt A --switch 8:B -> [(0, A), (8, B)]."""
    if not switches:
        return prompt
    schedule = [(0.0, prompt)]
    for switch in switches:
        seconds, sep, text = switch.partition(":")
        try:
            at = float(seconds)
        except ValueError:
            at = None
        if not sep or at is None:
            raise ValueError(f"--switch {switch!r} is not SECONDS:PROMPT (e.g. --switch \"8:a green square\")")
        schedule.append((at, text))
    return schedule


def _memory(args) -> int:
    from .memory import memory_table

    table = memory_table(args.seconds, args.width, args.height, args.fps, _config(args))
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    for key, value in table.items():
        if isinstance(value, dict):
            for k, v in value.items():
                print(f"  {key}.{k:<10} {v / 1e9:10.2f} GB")
        else:
            print(f"{key:<28} {value:,}" if isinstance(value, int) else f"{key:<28} {value}")
    return 0


def _generate(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from .events import Block, Frames, RunStart, Switch, TraceWriter
    from .pipeline import PackForcingPipeline
    from .registry import default_model
    from .video import write_mp4

    _check_output("--out", args.out, VIDEO_SUFFIXES)
    if args.trace:
        _check_output("--trace", args.trace)
    if args.scale < 1:
        raise ValueError(f"--scale {args.scale} is out of range; allowed 1 or more")
    prompt = _schedule(args.prompt, args.switch)
    pipe = PackForcingPipeline.from_name(args.model or default_model(), device=args.device)
    if args.compile:
        kernel = pipe.enable_fast_path()
        print(f"fast path: compiled blocks, decode one block ahead, attention kernel {kernel}", file=sys.stderr)
    config = _config(args, pipe.default_config)
    pipe.validate(prompt, args.seconds, config, args.seed)
    camera = pipe.camera_path(args.camera)
    frames = []
    trace = TraceWriter(args.trace) if args.trace else None
    bar = None
    try:
        for event in pipe.stream(prompt, args.seconds, args.seed, config, camera=camera):
            if trace:
                trace.write(event)
            if isinstance(event, RunStart):
                bar = tqdm(total=event.num_blocks, unit="block", desc=f"{pipe.name} {config.policy}", file=sys.stderr)
                if event.understood_words:
                    print(f"understood: {' '.join(event.understood_words)}", file=sys.stderr)
            elif isinstance(event, Frames):
                frames.append(event.frames)
            elif isinstance(event, Switch):
                done = (f"re-cached blocks {event.recached} in {event.seconds:.2f} s" if event.recached
                        else "no re-cache")
                tqdm.write(f"switch at block {event.block}: {event.prompt!r} ({done})", file=sys.stderr)
            elif isinstance(event, Block):
                bar.update(1)
                bar.set_postfix(kv=f"{event.kv_bytes / 2**20:.1f}MiB", ctx=event.context_tokens)
    finally:
        if bar:
            bar.close()
        if trace:
            trace.close()
    write_mp4(np.concatenate(frames), args.out, pipe.fps, args.scale)
    print(f"wrote {args.out}" + (f" and {args.trace}" if args.trace else ""), file=sys.stderr)
    return 0


def _check_output(flag: str, path: str, suffixes: tuple[str, ...] = ()) -> None:
    """Before any generating: the file can be written where it is asked for."""
    folder = os.path.dirname(os.path.abspath(path))
    if suffixes and not path.lower().endswith(suffixes):
        raise ValueError(f"{flag} {path} must end in one of {', '.join(suffixes)} (a container ffmpeg writes H.264 "
                         "into)")
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path}: the folder {folder} does not exist; create it first or choose another")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: the folder {folder} is not writable")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "memory":
            return _memory(args)
        if args.command == "generate":
            return _generate(args)
        if args.command == "ablate":
            from .ablation import main as ablate

            return ablate(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
