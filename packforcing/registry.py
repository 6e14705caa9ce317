"""Models by name. Each entry says how to load the model, the config it was trained
for, how long a video it may make, whether it can run here, and (optionally) how to
score its videos. The entries live beside their models, in the modules listed in
ENTRY_MODULES, and are imported by path on first use: the core imports no model it
does not run (the embedded model is a client of the engine, not part of it)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .backbone import Backbone
from .config import PackForcingConfig

# the order of the studio's model list; each module defines MODEL, a ModelEntry
ENTRY_MODULES = ("packforcing.embedded.model", "packforcing.backbones.tiny", "packforcing.backbones.wan")


@dataclass(frozen=True)
class Evaluator:
    """Scores one generated video from its frames and trace: score(frames (T, H, W, 3)
    uint8, Block events, prompt, seed) -> {metric: value or None when too short}."""

    score: Callable[[np.ndarray, list, str, int], dict]
    prompts: tuple[str, ...]  # the ablation lab's default prompts
    report: Callable[[dict], dict[str, str]]  # scores -> the studio's comparison rows (label -> text)
    spread: tuple[str, ...] = ()  # metrics whose standard error the ablation reports


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    load: Callable[..., Backbone]  # (device=None, dtype=None) -> Backbone
    default_config: PackForcingConfig = field(default_factory=PackForcingConfig)
    max_seconds: float = 120.0
    examples: tuple[str, ...] = ()  # prompts the studio offers
    unavailable: Callable[[], str | None] = lambda: None  # why it cannot run here, or None
    ready: Callable[[], bool] = lambda: True  # runs here without downloading anything
    default_rank: int = 100  # the default model is the ready one of lowest rank
    evaluator: Evaluator | None = None
    camera: bool = False  # takes a camera path and steering (the studio offers its camera controls)


_entries: dict[str, ModelEntry] | None = None


def entries() -> dict[str, ModelEntry]:
    """Every known model, by name, in the studio's order."""
    global _entries
    if _entries is None:
        found = [importlib.import_module(path).MODEL for path in ENTRY_MODULES]
        _entries = {entry.name: entry for entry in found}
    return _entries


def get(name: str) -> ModelEntry:
    known = entries()
    if name not in known:
        raise ValueError(f"model={name!r} is not known; choose one of {', '.join(known)}")
    return known[name]


def available_models() -> dict[str, str | None]:
    """Model name -> None if it can run here, else why not."""
    return {name: entry.unavailable() for name, entry in entries().items()}


def default_model() -> str:
    """The lowest-ranked model that can run here without a download (the real model
    where its weights are already here: no surprise 20 GB download)."""
    usable = [e for e in entries().values() if e.unavailable() is None and e.ready()]
    if not usable:
        raise ValueError(f"no model can run here: {available_models()}")
    return min(usable, key=lambda e: e.default_rank).name
