"""Many prompt switches, measured on a running server (app.py in a subprocess). Prints JSON.

    python -m bench.live_switches [--seconds 30]

live: the same run twice through the API, without switches and with a Switch after every
  streamed block: wall seconds per block (between the first and the last block's update).
trace: a trace of the recorded 20 blocks with 200 switches, uploaded through the API:
  seconds to the answer (the panels drawn).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .hardening import submit
from .studio import start_studio

ROOT = Path(__file__).resolve().parent.parent
STATUS = 6


def per_block(client, seconds: float, switch: bool) -> dict:
    """Seconds per block of one run, switching the prompt after every block when asked."""
    job = submit(client, "a red circle, camera pans right", seconds)
    stamps, seen, switches, last = [], 0, 0, None
    while not job.done() or seen < len(job.outputs()):
        outputs = job.outputs()
        for update in outputs[seen:]:
            block = re.match(r"Block (\d+) ", str(update[STATUS]))  # a block's panels repeat its status
            if block and block.group(1) != last:
                last = block.group(1)
                stamps.append(time.perf_counter())
                if switch:
                    prompt = ("a green circle" if switches % 2 else "a red circle") + ", camera pans right"
                    switches += "next block" in client.predict(prompt, api_name="/switch")
        seen = len(outputs)
        time.sleep(0.01)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"blocks": len(stamps), "switches": switches, "seconds_per_block": round(statistics.mean(gaps), 3),
            "last_quarter_seconds_per_block": round(statistics.mean(gaps[-max(1, len(gaps) // 4):]), 3)}


def trace_load(url: str) -> dict:
    from gradio_client import Client, handle_file

    sys.path.insert(0, str(ROOT / "tests"))
    from test_hostile import with_switches

    from packforcing.events import write_jsonl

    path = Path(tempfile.mkdtemp()) / "switches.jsonl"
    write_jsonl(with_switches(200), path)
    started = time.perf_counter()
    result = Client(url, verbose=False).predict(handle_file(str(path)), api_name="/load_trace")
    message = next(r for r in result if isinstance(r, str))  # the replay's status line, beside its figures
    return {"bytes": path.stat().st_size, "seconds": round(time.perf_counter() - started, 2), "status": message}


def main() -> None:
    from gradio_client import Client

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    studio = start_studio(Path(tempfile.mkdtemp()) / "cache")
    try:
        client = Client(studio.url, verbose=False)
        per_block(client, 2, False)  # warm-up: the model loads
        plain, switching = per_block(client, args.seconds, False), per_block(client, args.seconds, True)
        out = {"live": {"without": plain, "switch_every_block": switching,
                        "ratio": round(switching["seconds_per_block"] / plain["seconds_per_block"], 2)},
               "trace": trace_load(studio.url)}
    finally:
        studio.stop()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
