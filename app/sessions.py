"""Per browser session: the flag that stops its run and the folders its runs write.

Stop flags are keyed by (session, view) and armed when Generate is clicked, so a Stop
that arrives while the run still waits in the queue stops it before it starts. Each
session keeps only its newest run folder (whose video and trace it may still download);
older ones go when a new run starts, all of them when the tab closes.
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
_dirs_lock = threading.Lock()


def arm_stop(session: str | None, view: str) -> None:
    """Generate was clicked: a fresh flag, so a Stop while the run waits in the queue stops it."""
    _stop_flags[(session, view)] = threading.Event()


def begin_run(session: str | None, view: str) -> threading.Event:
    """A run starts: the flag it obeys (the armed one, or a new one for an API call)."""
    with _dirs_lock:
        _running[session] = _running.get(session, 0) + 1
    return _stop_flags.setdefault((session, view), threading.Event())


def end_run(session: str | None, view: str, flag: threading.Event) -> None:
    """A run ended (or was abandoned); if its tab has closed meanwhile, its folders go now."""
    if _stop_flags.get((session, view)) is flag:
        del _stop_flags[(session, view)]
    with _dirs_lock:
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
    flag = _stop_flags.get((session, view))
    if flag is not None:
        flag.set()


def new_run_dir(session: str | None) -> str:
    """A folder for a run starting now. The session's older folders go, except the newest
    (its video and trace are still offered for download); so do folders of sessions idle
    longer than RUN_FILES_TTL. Folders sit in Gradio's cache, so Gradio serves them
    without copying them."""
    root = get_upload_folder()
    os.makedirs(root, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="packforcing-run-", dir=root)
    now = time.time()
    with _dirs_lock:
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
    for key in [key for key in list(_stop_flags) if key[0] == session]:
        _stop_flags.pop(key).set()
    with _dirs_lock:
        if _running.get(session):
            _ended.add(session)
            return
        stale = _run_dirs.pop(session, [])
    _remove(stale)


def _remove(folders: list[str]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
