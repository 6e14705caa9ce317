"""The studio (app.py) in a subprocess on a free port, with its own Gradio cache: how the
tests and the benchmarks that drive it over HTTP start it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Studio:
    url: str
    cache: Path  # GRADIO_TEMP_DIR of the server: its run folders and Gradio's copies
    proc: subprocess.Popen

    def stop(self, timeout: float = 20) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(cache: Path, nice: int = 0, root: Path = ROOT, **env) -> Studio:
    """`root`'s app.py serving until it answers; `nice` lowers its priority, so that on a busy
    machine the browser and the test that drive it are not starved by the model beside them."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(cache), **env}
    log = cache.with_name(cache.name + ".log")  # a file, not a pipe: a full pipe would block the server
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
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
