"""Reading a trace from an untrusted source (an upload): nothing is built before it is checked.

The file's size is capped before it is read; every field is checked for its type and for
bounds that follow from the trace's own run event (its config and geometry) and from the
block's own index, so what the replay then draws costs in proportion to the blocks really
in the file. Every failure is a ValueError that names the line, the field and what is
allowed, and never the file's path on this machine.
"""

from __future__ import annotations

import json
import os

from .config import RECACHE_MODES, PackForcingConfig, check_number, shown
from .controls import CAMERA_DIRECTIONS
from .events import RunEnd, event_from_dict

MAX_TRACE_BYTES = 4 * 2**20  # a 120-s run's trace is about 0.4 MB
MAX_TRACE_BLOCKS = 256  # the longest run any model here makes is 120 blocks
MAX_TEXT = 2000
PARTITIONS = ("sink", "mid_selected", "mid_archived", "recent", "current")
CAMERA_KEYS = ("direction", "x", "end", "period", "view")
BIG = 10**15  # counts of bytes and tokens: far above any real run, exact as a float


def read_trace(path) -> list:
    """The events of a trace file, checked; ValueError with a plain message otherwise."""
    if not path:
        raise ValueError("no file: upload a trace .jsonl written by a run or by `python -m packforcing generate "
                         "--trace`")
    size = os.path.getsize(path)
    if size > MAX_TRACE_BYTES:
        raise ValueError(f"the file is {size / 2**20:.1f} MB; a trace is at most {MAX_TRACE_BYTES // 2**20} MB "
                         f"({MAX_TRACE_BLOCKS} blocks)")
    with open(path, "rb") as f:
        raw = f.read(MAX_TRACE_BYTES + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text; a trace is JSON lines") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) > MAX_TRACE_BLOCKS + 2:
        raise ValueError(f"the file has {len(lines):,} lines; a trace has at most {MAX_TRACE_BLOCKS + 2} (a run line, "
                         f"{MAX_TRACE_BLOCKS} blocks, an end line)")
    return check_trace([(n, _parse(n, line)) for n, line in lines])


def _parse(number: int, line: str):
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError(f"line {number} is nested too deeply to be a trace event") from None
    except ValueError as e:  # JSONDecodeError, and integers too long to convert
        raise ValueError(f"line {number} is not JSON: {str(e)[:80]}") from None


def check_trace(records: list[tuple[int, object]]) -> list:
    """(line number, parsed JSON) pairs -> events, or a ValueError naming the first problem."""
    if not records:
        raise ValueError("the file is empty; a trace starts with a 'run' line, then one line per block")
    number, first = records[0]
    if _kind(number, first) != "run":
        raise ValueError(f"line {number} is a {_kind(number, first)!r} event; a trace starts with its 'run' event")
    run = _run(f"line {number}", first)
    events, blocks = [event_from_dict(run)], 0
    for number, record in records[1:]:
        where, kind = f"line {number}", _kind(number, record)
        if isinstance(events[-1], RunEnd):
            raise ValueError(f"{where} follows the 'end' event; nothing may follow it")
        if kind == "block":
            events.append(event_from_dict(_block(f"{where} (block {blocks})", record, blocks, run)))
            blocks += 1
        elif kind == "switch":
            events.append(event_from_dict(_switch(where, record, blocks, run)))
        elif kind == "end":
            events.append(event_from_dict(_end(where, record, blocks)))
        else:
            raise ValueError(f"{where} is a second {kind!r} event; a trace holds one run")
    if blocks == 0:
        raise ValueError("no 'block' events found; a trace needs at least one generated block")
    return events


def _kind(number: int, record) -> str:
    kind = record.get("type") if isinstance(record, dict) else None
    if kind not in ("run", "block", "switch", "end"):
        what = f"type {shown(kind)}" if isinstance(record, dict) else f"a JSON {type(record).__name__}"
        raise ValueError(f"line {number} is not a trace event ({what}); each line is an object with type run, block, "
                         "switch or end")
    return kind


def _field(where: str, record: dict, name: str, check, *args, required: bool = True):
    if name not in record:
        if required:
            raise ValueError(f"{where}: the field {name!r} is missing")
        return None
    try:
        return check(name, record[name], *args)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _int(name, value, low, high):
    return check_number(name, value, low, high, integer=True)


def _float(name, value, low, high):
    return check_number(name, value, low, high)


def _text(name, value, most=MAX_TEXT):
    if not isinstance(value, str) or len(value) > most:
        raise ValueError(f"{name} must be text of at most {most:,} characters; got {shown(value)}")
    return value


def _run(where: str, d: dict) -> dict:
    out = {"type": "run", "prompt": _field(where, d, "prompt", _text), "model": _field(where, d, "model", _text, 100)}
    out["seed"] = _field(where, d, "seed", _int, 0, 2**64 - 1)
    out["num_blocks"] = _field(where, d, "num_blocks", _int, 1, MAX_TRACE_BLOCKS)
    words = d.get("understood_words", [])
    if not isinstance(words, list) or len(words) > 500 or not all(isinstance(w, str) and len(w) <= 100 for w in words):
        raise ValueError(f"{where}: understood_words must be a list of at most 500 words")
    out["understood_words"] = words
    config = d.get("config")
    try:
        config = PackForcingConfig.from_dict(config) if isinstance(config, dict) else None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: config is not valid: {str(e)[:200]}") from None
    if config is None:
        raise ValueError(f"{where}: config must be an object (the run's PackForcingConfig)")
    out["config"] = config.to_dict()
    out["geometry"] = _geometry(where, d.get("geometry"), config)
    return out


def _geometry(where: str, g, config: PackForcingConfig) -> dict:
    if not isinstance(g, dict):
        raise ValueError(f"{where}: geometry must be an object")
    out = {name: _field(where, g, name, _int, low, high) for name, low, high in (
        ("tokens_per_latent_frame", 1, 10**7), ("tokens_per_block", 1, 10**8),
        ("compressed_tokens_per_block", 0, 10**8),
        ("bytes_per_token", 1, 10**9), ("fps", 1, 240), ("frames_per_latent", 1, 64))}
    bounded = _field(where, g, "bounded_context_tokens", _int, 0, 10**9, required=False)
    if bounded is not None:
        out["bounded_context_tokens"] = bounded
    for name in ("latent_shape", "pixel_size"):
        value = g.get(name, [])
        whole = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not whole or len(value) > 8:
            raise ValueError(f"{where}: geometry {name} must be a short list of whole numbers")
        out[name] = value
    # what the block checks measure time by: derived, never taken from the file
    out["seconds_per_block"] = config.block_frames * out["frames_per_latent"] / out["fps"]
    return out


def _block(where: str, d: dict, index: int, run: dict) -> dict:
    config, geometry = PackForcingConfig.from_dict(run["config"]), run["geometry"]
    out = {"type": "block"}
    for name in ("block", "current"):  # blocks come in order: 0, 1, 2, ...
        if _field(where, d, name, _int, 0, MAX_TRACE_BLOCKS) != index:
            raise ValueError(f"{where}: {name}={d[name]} but this is block {index}; blocks are numbered 0, 1, 2, ... "
                             "in order")
        out[name] = index
    if index >= run["num_blocks"]:
        raise ValueError(f"{where}: the run event announced {run['num_blocks']} blocks; this is one more")
    capacity = index if config.policy == "full" else config.bank_capacity
    limits = {"sink": config.sink_blocks, "mid_bank": capacity, "mid_selected": capacity,
              "recent": config.recent_blocks, "evicted": index}
    for name, most in limits.items():
        out[name] = _field(where, d, name, _ids, index, most, required=name != "evicted") or []
    if not set(out["mid_selected"]) <= set(out["mid_bank"]):
        raise ValueError(f"{where}: mid_selected holds blocks that are not in mid_bank")
    frames = (index + 1) * config.block_frames  # latent frames generated up to this block
    held = set(out["sink"]) | set(out["mid_bank"]) | set(out["recent"]) | {index}
    attended = set(out["sink"]) | set(out["mid_selected"]) | set(out["recent"]) | {index}
    out["selection_scores"] = _field(where, d, "selection_scores", _keyed, set(out["mid_bank"]), -BIG, BIG)
    out["rope_shift"] = _field(where, d, "rope_shift", _keyed, attended, -frames, frames)
    out["positions"] = _field(where, d, "positions", _keyed, held, 0, frames, required=False) or {}
    out["tokens"] = _field(where, d, "tokens", _counts, PARTITIONS, BIG, True, required=False) or {}
    out["timings"] = _field(where, d, "timings", _counts, ("transformer", "decode", "compress"), 10**6, False,
                            required=False) or {}
    for name in ("kv_bytes", "full_cache_bytes", "context_tokens"):
        out[name] = _field(where, d, name, _int, 0, BIG)
    out["seconds"] = _field(where, d, "seconds", _float, 0, 10**6)
    made = (index + 1) * geometry["seconds_per_block"]
    out["video_seconds"] = _field(where, d, "video_seconds", _float, 0, made, required=False) or 0.0
    out["frames_total"] = _field(where, d, "frames_total", _int, 0, round(made * geometry["fps"]), required=False) or 0
    if d.get("camera") is not None:
        out["camera"] = _field(where, d, "camera", _camera)
    out["prompt"] = _field(where, d, "prompt", _text, required=False) or ""
    if d.get("selection_change") is not None:
        out["selection_change"] = _field(where, d, "selection_change", _float, 0, 1)
    return out


def _switch(where: str, d: dict, index: int, run: dict) -> dict:
    """A prompt switch before block `index` (the next block in the file)."""
    if _field(where, d, "block", _int, 0, MAX_TRACE_BLOCKS) != index or index >= run["num_blocks"]:
        raise ValueError(f"{where}: a switch with block={d['block']} comes before block {index}; it must name that "
                         "block")
    out = {"type": "switch", "block": index, "prompt": _field(where, d, "prompt", _text),
           "seconds": _field(where, d, "seconds", _float, 0, 10**6)}
    out["recache"] = d.get("recache")
    if out["recache"] not in RECACHE_MODES:
        raise ValueError(f"{where}: recache={shown(out['recache'])} is not allowed; choose one of "
                         f"{', '.join(RECACHE_MODES)}")
    out["recached"] = _field(where, d, "recached", _ids, index - 1, index)
    _check_consistent(where, out)
    return out


def _check_consistent(where: str, switch: dict) -> None:
    """A switch may not contradict itself: recache "none" re-writes no block."""
    if switch["recache"] == "none" and switch["recached"]:
        raise ValueError(f"{where}: recache is 'none' but recached lists {len(switch['recached'])} blocks; "
                         "a switch without re-cache re-writes none (recached: [])")


def _camera(name, value):
    """Where a block looked: a direction and a few positions in the model's units."""
    if (not isinstance(value, dict) or value.get("direction") not in CAMERA_DIRECTIONS
            or not set(value) <= set(CAMERA_KEYS)):
        raise ValueError(f"{name} must be an object with a direction ({', '.join(CAMERA_DIRECTIONS)}) and numbers "
                         f"{', '.join(CAMERA_KEYS[1:])}")
    return {k: v if k == "direction" else _float(f"{name}[{k}]", v, -BIG, BIG) for k, v in value.items()}


def _ids(name, value, upto, most):
    """A list of distinct earlier block indices, at most `most` of them."""
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list of block numbers; got {shown(value)}")
    if len(value) > most:
        raise ValueError(f"{name} has {len(value):,} blocks; this run holds at most {most} there")
    ids = [_int(f"a block number in {name}", v, 0, upto) for v in value]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name} lists a block twice")
    return ids


def _keyed(name, value, keys, low, high):
    """{block number (as JSON text): number}, only for blocks in `keys`."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object from block number to number; got {shown(value)}")
    out = {}
    for key, v in value.items():
        if not (key.isdigit() and len(key) < 10 and int(key) in keys):
            raise ValueError(f"{name} has the key {shown(key)}, not a block this block holds")
        out[key] = _float(f"{name}[{key}]", v, low, high)
    return out


def _counts(name, value, keys, high, integer):
    if not isinstance(value, dict) or not set(value) <= set(keys):
        raise ValueError(f"{name} must be an object with keys among {', '.join(keys)}")
    return {k: check_number(f"{name}[{k}]", v, 0, high, integer) for k, v in value.items()}


def _end(where: str, d: dict, blocks: int) -> dict:
    out = {"type": "end", "blocks": _field(where, d, "blocks", _int, blocks, blocks),
           "seconds": _field(where, d, "seconds", _float, 0, 10**7)}
    stopped, error = d.get("stopped", False), d.get("error")
    if not isinstance(stopped, bool):
        raise ValueError(f"{where}: stopped must be true or false; got {shown(stopped)}")
    out["stopped"], out["error"] = stopped, None if error is None else _field(where, d, "error", _text, 500)
    return out
