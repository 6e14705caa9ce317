"""Shared by every test: tests/ is on sys.path (pytest inserts a conftest's folder), so
tests in subfolders import helpers.py and dense_reference.py too.

`studio`: one running studio (app.py in a subprocess, `bench/studio.py`) shared by the tests that drive it
over HTTP, the browser tests and the gradio_client tests. Its Gradio cache is a folder of
its own, so tests can count what runs leave on disk.

Under pytest-xdist (README: `-n 2 --dist loadfile`) each file runs whole in one worker (a
worker starts its own studio when one of its files needs it), and each worker keeps torch
to one thread: two workers share the cores."""

import os

import pytest
import torch

from bench.studio import start_studio

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def studio(tmp_path_factory):
    server = start_studio(tmp_path_factory.mktemp("gradio-cache"), nice=10)
    yield server
    server.stop()
