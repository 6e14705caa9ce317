"""python app.py: the PackForcing studio (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT respected).

PACKFORCING_PRELOAD=wan-1.3b loads a model at start-up, outside any GPU-acquiring call:
what a ZeroGPU Space needs (weights are placed on "cuda" while the Space starts). Without
it, the default model loads in the background while the server starts; set it empty to
load nothing before the first Generate.
PACKFORCING_THREADS sets torch's CPU threads (default 1, see below).
"""

import os
import threading

from app.handlers import get_pipeline
from app.ui import build_demo
from packforcing import registry
from packforcing.tracefile import MAX_TRACE_BYTES

for name in filter(None, os.environ.get("PACKFORCING_PRELOAD", "").split(",")):
    get_pipeline(name.strip())
demo = build_demo()


def preload_default() -> None:
    """The default model loads while the page opens instead of on the first Generate (3-4 s
    of the first video's wait on 2 cores); a Generate that comes sooner waits for the same load."""
    if "PACKFORCING_PRELOAD" not in os.environ:
        threading.Thread(target=get_pipeline, args=(registry.default_model(),), daemon=True).start()

if __name__ == "__main__":
    # On a CPU, torch's threads share the cores with Gradio's per-block work (video
    # segments, figures) and, locally, the browser; threads that wait on each other then
    # stall. Measured on 2 cores with the browser on them: one thread streamed 14 s of
    # video in 13.2 s, two threads 9 s in 13.5 s.
    import torch

    torch.set_num_threads(int(os.environ.get("PACKFORCING_THREADS", "1")))
    preload_default()
    # show_error=False: an unexpected exception reaches the browser as a bare "Error"
    # (the handlers turn every bad input into a plain message themselves). Uploads are
    # traces, capped at the size packforcing.tracefile accepts. Gradio keeps each session's
    # latest outputs (a few MB of figures) for up to 10,000 sessions by default, and API
    # clients never close theirs: the 64 most recently used sessions are kept.
    demo.launch(show_error=False, max_file_size=MAX_TRACE_BYTES, state_session_capacity=64)
