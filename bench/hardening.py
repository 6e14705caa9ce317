"""The studio under hostile-but-fair use, measured on a running server (app.py in a
subprocess, its own Gradio cache). Prints JSON.

    python -m bench.hardening [--race 10] [--soak 30] [--bomb-seconds 5e5]

cancel_race: A streams a 60-s video, B queues behind it, A cancels (job.cancel()) right
  after an update, while its next block computes. Failed B runs, B runs whose scores
  differ from B made alone, and the server's RSS after the first and the last trial.
trace_bomb: a trace of two blocks claiming `video_seconds` of video, uploaded through the
  API: seconds to the answer, the server's RSS change, the message.
run_folders: 8 runs in one session, then the run folders that session left.
soak: N consecutive runs in one session: RSS, open files and the cache's bytes at the start
  and the end (the first run warms the model up first).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from .studio import start_studio

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "tests" / "data" / "trace_dynamic.jsonl"
RUN = dict(model="embedded", seed=0, sink_frames=4, top_k=2, mid_capacity=4, policy="dynamic", rope_repair=True,
           compression="hr+lr", camera="")
STATUS, TRACE_OUT = 6, 8


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


def submit(client, prompt, seconds, **overrides):
    return client.submit(**{**RUN, "prompt": prompt, "seconds": seconds, **overrides}, api_name="/generate")


def wait_outputs(job, n, timeout=120):
    deadline = time.time() + timeout
    while len(job.outputs()) < n and not job.done() and time.time() < deadline:
        time.sleep(0.005)


def scores(trace_path) -> list:
    with open(trace_path) as f:
        return [e["selection_scores"] for e in map(json.loads, f) if e["type"] == "block"]


def cancel_race(url: str, pid: int, trials: int) -> dict:
    from gradio_client import Client

    alone = scores(submit(Client(url, verbose=False), "a blue square", 4).result(timeout=300)[TRACE_OUT])
    failed, differed, rss = 0, 0, []
    for _ in range(trials):
        a, b = Client(url, verbose=False), Client(url, verbose=False)
        job_a = submit(a, "a red circle", 60)
        wait_outputs(job_a, 2)
        job_b = submit(b, "a blue square", 4)
        wait_outputs(job_a, len(job_a.outputs()) + 1)
        job_a.cancel()
        try:
            result = job_b.result(timeout=300)
            ok = result[STATUS].startswith("Done")
        except Exception:  # the failure this measures: B's run raised on the server
            ok = False
        failed += not ok
        differed += ok and scores(result[TRACE_OUT]) != alone
        rss.append(rss_mb(pid))
    return {"trials": trials, "failed_runs": failed, "runs_with_other_scores": differed,
            "rss_mb_after_first": round(rss[0], 1), "rss_mb_after_last": round(rss[-1], 1),
            "rss_growth_mb_per_trial": round((rss[-1] - rss[0]) / max(1, trials - 1), 2),
            "rss_mb_by_trial": [round(r, 1) for r in rss]}


def trace_bomb(url: str, pid: int, seconds: float, folder: Path) -> dict:
    from gradio_client import Client, handle_file

    with open(TRACE) as f:
        lines = [json.loads(line) for line in f][:3]
    lines[2]["video_seconds"] = seconds
    bomb = folder / "bomb.jsonl"
    bomb.write_text("".join(json.dumps(line) + "\n" for line in lines))
    client = Client(url, verbose=False)
    before = rss_mb(pid)
    started = time.perf_counter()
    result = client.predict(handle_file(str(bomb)), api_name="/load_trace")
    took = time.perf_counter() - started
    return {"video_seconds": seconds, "file_bytes": bomb.stat().st_size, "seconds": round(took, 3),
            "rss_change_mb": round(rss_mb(pid) - before, 1),
            "message": result[1]}  # (the client leaves out the State output)


def runs(url: str, n: int, seconds: float = 2) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)  # one session
    for i in range(n):
        status = client.predict(**{**RUN, "prompt": "a red circle", "seconds": seconds, "seed": i},
                                api_name="/generate")[STATUS]
        if not status.startswith("Done"):
            raise RuntimeError(f"run {i} did not finish: {status}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--race", type=int, default=10)
    parser.add_argument("--soak", type=int, default=30)
    parser.add_argument("--bomb-seconds", type=float, default=5e5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="packforcing-hardening-"))
    cache = folder / "gradio-cache"
    cache.mkdir()
    studio = start_studio(cache)
    proc, url = studio.proc, studio.url
    try:
        out = {"cancel_race": cancel_race(url, proc.pid, args.race)}
        out["trace_bomb"] = trace_bomb(url, proc.pid, args.bomb_seconds, folder)
        before = set(cache.glob("packforcing-run-*"))
        runs(url, 8)
        out["run_folders"] = {"runs": 8,
                              "folders_left_by_the_session": len(set(cache.glob("packforcing-run-*")) - before)}
        runs(url, 1)  # warm
        start = {"rss_mb": round(rss_mb(proc.pid), 1), "open_files": open_files(proc.pid),
                 "cache_bytes": cache_bytes(cache)}
        runs(url, args.soak)
        end = {"rss_mb": round(rss_mb(proc.pid), 1), "open_files": open_files(proc.pid),
               "cache_bytes": cache_bytes(cache)}
        out["soak"] = {"runs": args.soak, "start": start, "end": end}
    finally:
        studio.stop(timeout=30)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
