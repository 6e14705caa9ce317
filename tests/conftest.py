"""Shared by every test: tests/ is on sys.path (pytest inserts a conftest's folder), so
tests in subfolders import helpers.py and dense_reference.py too.

`studio`: one running studio (app.py in a subprocess) shared by the tests that drive it
over HTTP, the browser tests and the gradio_client tests. Its Gradio cache is a folder of
its own, so tests can count what runs leave on disk.

Under pytest-xdist (README: `-n 2 --dist loadfile`) each file runs whole in one worker (a
worker starts its own studio when one of its files needs it), and each worker keeps torch
to one thread: two workers share the cores."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@dataclass
class Studio:
    url: str
    cache: Path  # GRADIO_TEMP_DIR of the server: its run folders and Gradio's copies
    proc: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(cache: Path, nice: int = 0, **env) -> Studio:
    """app.py in a subprocess; `nice` lowers its priority, so that on a busy machine the
    browser and the test that drive it are not starved by the model running beside them."""
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(cache), **env}
    log = cache.with_name(cache.name + ".log")  # a file, not a pipe: a full pipe would block the server
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return Studio(url, cache, proc)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("app did not start within 120 s")


@pytest.fixture(scope="session")
def studio(tmp_path_factory):
    server = start_studio(tmp_path_factory.mktemp("gradio-cache"), nice=10)
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=20)
