"""python app.py: the PackForcing studio (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT respected).

PACKFORCING_PRELOAD=wan-1.3b loads a model at start-up, outside any GPU-acquiring call:
what a ZeroGPU Space needs (weights are placed on "cuda" while the Space starts).
"""

import os

from app.handlers import get_pipeline
from app.ui import build_demo

for name in filter(None, os.environ.get("PACKFORCING_PRELOAD", "").split(",")):
    get_pipeline(name.strip())
demo = build_demo()

if __name__ == "__main__":
    demo.launch(show_error=True)
