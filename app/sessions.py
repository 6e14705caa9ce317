"""Per browser session: the flag that stops its run and the folders its runs write.

Stop flags are keyed by (session, view) and armed when Generate is clicked, so a Stop
that arrives while the run still waits in the queue stops it before it starts. A
streaming generation's live controls (Switch, the camera buttons) are held while it runs
and released when it ends. Each session keeps only its newest run folder (whose video
and trace it may still download); older ones go when a new run starts, all of them when
the tab closes. Every change to this state is made under one lock: handlers run on
several threads at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

from gradio.utils import get_upload_folder

# Run folders of sessions idle this long go (Gradio's delete_cache uses the same age).
RUN_FILES_TTL = 3600
_stop_flags: dict[tuple, threading.Event] = {}
_run_dirs: dict[str | None, list[str]] = {}
_running: dict[str | None, int] = {}  # runs in progress per session
_ended: set[str | None] = set()  # sessions whose tab closed while a run was in progress
_live: dict[str | None, object] = {}  # the live controls of each session's streaming generation
_lock = threading.Lock()


def arm_stop(session: str | None, view: str) -> None:
    """Generate was clicked: a fresh flag, so a Stop while the run waits in the queue stops it."""
    with _lock:
        _stop_flags[(session, view)] = threading.Event()


def begin_run(session: str | None, view: str) -> threading.Event:
    """A run starts: the flag it obeys (the armed one, or a new one for an API call)."""
    with _lock:
        _running[session] = _running.get(session, 0) + 1
        return _stop_flags.setdefault((session, view), threading.Event())


def end_run(session: str | None, view: str, flag: threading.Event) -> None:
    """A run ended (or was abandoned); if its tab has closed meanwhile, its folders go now."""
    with _lock:
        if _stop_flags.get((session, view)) is flag:
            del _stop_flags[(session, view)]
        _running[session] -= 1
        if _running[session]:
            return
        del _running[session]
        if session not in _ended:
            return
        _ended.discard(session)
        stale = _run_dirs.pop(session, [])
    _remove(stale)


def request_stop(session: str | None, view: str) -> None:
    with _lock:
        flag = _stop_flags.get((session, view))
    if flag is not None:
        flag.set()


def hold_live(session: str | None, live) -> None:
    """A generation starts streaming: its live controls answer this session's buttons."""
    with _lock:
        _live[session] = live


def live(session: str | None):
    """The live controls of this session's streaming generation, or None when nothing streams."""
    with _lock:
        return _live.get(session)


def release_live(session: str | None, live) -> None:
    """A generation ended: its controls answer no more (a newer run's stay)."""
    with _lock:
        if live is not None and _live.get(session) is live:
            del _live[session]


def new_run_dir(session: str | None) -> str:
    """A folder for a run starting now. The session's older folders go, except the newest
    (its video and trace are still offered for download); so do folders of sessions idle
    longer than RUN_FILES_TTL. Folders sit in Gradio's cache, so Gradio serves them
    without copying them."""
    root = get_upload_folder()
    os.makedirs(root, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="packforcing-run-", dir=root)
    now = time.time()
    with _lock:
        mine = _run_dirs.setdefault(session, [])
        stale, mine[:] = mine[:-1], mine[-1:] + [folder]
        for other, dirs in list(_run_dirs.items()):
            if other != session and all(_age(d, now) > RUN_FILES_TTL for d in dirs):
                stale += _run_dirs.pop(other)
    _remove(stale)
    return folder


def _age(folder: str, now: float) -> float:
    try:
        return now - os.path.getmtime(folder)
    except OSError:
        return float("inf")


def end_session(session: str | None) -> None:
    """The tab closed: stop its runs (after the block in flight) and delete its folders,
    at once or, while a run still writes into one, when that run ends."""
    with _lock:
        for key in [key for key in _stop_flags if key[0] == session]:
            _stop_flags.pop(key).set()
        _live.pop(session, None)
        if _running.get(session):
            _ended.add(session)
            return
        stale = _run_dirs.pop(session, [])
    _remove(stale)


def _remove(folders: list[str]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
