"""Time from a click on Generate to the streamed video playing, in headless Chromium, for
one or more checkouts of the studio on the same machine (each its own server, a fresh
page per trial), with where the time goes. Prints JSON.

    python -m bench.first_video --trials 5 [--checkout PATH ...]

Per trial: the click, the first status line of the run (the request reached the model),
the first block's status (its segment was written and sent), the video element playing.
The server's own split of the first block (model load, first block, segment encoding,
figures) comes from `--inside`, which times the same steps in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .studio import start_studio

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red circle and a blue square, camera pans right"
WATCH = """() => { const v = document.querySelector('#stream video'), s = document.querySelector('#status').innerText;
                   const t = performance.now();
                   if (!window.__t) window.__t = {};
                   if (!window.__t.started && /Generating/.test(s)) window.__t.started = t;
                   if (!window.__t.block && /Block \\d/.test(s)) window.__t.block = t;
                   if (v && v.readyState >= 2 && v.currentTime > 0) { window.__t.playing = t; return true; }
                   return false; }"""


def _trial(page, url: str) -> dict:
    page.goto(url)
    page.wait_for_selector("#generate")
    page.locator("#prompt textarea").fill(PROMPT)
    seconds = page.locator("#seconds input[type=number]")
    seconds.fill("8")
    seconds.press("Enter")
    clicked = page.evaluate("() => { window.__t = {}; document.querySelector('#generate').click(); "
                            "return performance.now(); }")
    page.wait_for_function(WATCH, timeout=120_000, polling=20)
    marks = page.evaluate("() => window.__t")
    page.wait_for_function("() => /Done|Stopped/.test(document.querySelector('#status').innerText)", timeout=120_000)
    return {k: round((marks[k] - clicked) / 1000, 3) for k in ("started", "block", "playing") if k in marks}


def browser(checkout: Path, trials: int) -> dict:
    from playwright.sync_api import sync_playwright

    cache = Path(tempfile.mkdtemp(prefix="first-video-")) / "cache"
    cache.mkdir()
    started = time.perf_counter()
    server = start_studio(cache, root=checkout)  # the server runs this checkout's app.py
    boot = time.perf_counter() - started
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                                        args=["--headless", "--no-sandbox", "--disable-gpu",
                                              "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            runs = [_trial(page, server.url) for _ in range(trials)]
            browser.close()
    finally:
        server.stop()
    playing = [r["playing"] for r in runs]
    return {"checkout": str(checkout), "server_start_s": round(boot, 2), "trials": runs,
            "median_play_s": statistics.median(playing), "first_play_s": playing[0]}


def inside() -> dict:
    """The first block's steps, timed in this process: load, the first block, its segment, its figures."""

    from app import handlers
    from packforcing import registry
    from packforcing.events import Block, Frames
    from packforcing.memory import kv_curve
    from packforcing.video import write_mp4
    from visualizers import figures_at

    model = registry.default_model()
    t0 = time.perf_counter()
    pipe = handlers.get_pipeline(model)
    t1 = time.perf_counter()
    events, out = [], {"model": model, "load_s": t1 - t0}
    for event in pipe.stream(PROMPT, 8, 0, pipe.default_config):
        if isinstance(event, Frames):
            out["first_block_s"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            write_mp4(handlers.upscale(event.frames), os.path.join(tempfile.mkdtemp(), "s.ts"), event.fps)
            out["segment_s"] = time.perf_counter() - t2
            continue
        events.append(event)
        if isinstance(event, Block):
            t3 = time.perf_counter()
            figures_at(events, None, kv_curve(8.0, config=pipe.default_config))
            out["figures_s"] = time.perf_counter() - t3
            break
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--checkout", action="append", type=Path,
                        help="a checkout of the studio (default: this one); repeat to compare")
    parser.add_argument("--inside", action="store_true", help="only the in-process split of the first block")
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(inside(), indent=1))
        return 0
    print(json.dumps([browser(c.resolve(), args.trials) for c in args.checkout or [ROOT]], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
