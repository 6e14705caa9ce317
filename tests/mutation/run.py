"""Mutation run over the method's core: plausible one-line bugs, one at a time.

    .venv/bin/python tests/mutation/run.py                  # every mutant (about an hour on one core)
    .venv/bin/python tests/mutation/run.py --sample 150     # a seeded sample
    .venv/bin/python tests/mutation/run.py --files cache,rope --list   # show mutants only
    .venv/bin/python tests/mutation/run.py --only cache.py:87,selection.py:40 --all-failures

Mutants: operator swaps (+ -, * /, // /, < <=, > >=, == !=, in / not in, and or),
constants off by one, True/False, min/max, sum/mean, cos/sin, sorted() and reversed()
dropped, reverse=True toggled, slices turned round or their stride dropped, [0] / [-1],
dropped negation and `not`, inverted if-conditions, and one-line statements deleted.
Comments, docstrings, error messages and the integers that only lay tensors out (the dims
of transpose, flatten, repeat, cat...; wrong ones fail at once) are never mutated.

The repository is copied to a temporary folder once; each mutant is written there, tested
in a forked child (torch and diffusers are imported once, the package fresh per child,
bytecode never cached) with `pytest -x` on the tests that pin that file, then the file is
restored. Nothing in the worktree is touched. Prints JSON: mutants, killed, survived (file:
line, the change), timeouts, kill rate. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time

from mutants import mutants_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGETS = ("cache", "selection", "rope", "attention", "sampler", "memory", "compression", "block_memory", "scheduler",
           "passes")
DECISIONS = ["test_cache_decisions.py", "test_selection_scores.py", "test_rope_direction.py",
             "test_compressed_positions.py", "test_memory_edges.py", "test_parity_dynamic.py",
             "test_stream_contract.py", "test_block_memory.py", "test_scheduler.py"]
OLDER = ["test_rope_selection.py", "test_compression_memory.py", "test_parity.py", "test_sampler_trace.py"]
# the slow, VAE-heavy tests are left out of the per-mutant run (they pin frames, not decisions)
DESELECT = ["test_compression_memory.py::test_lr_branch_real_geometry_uses_frozen_vae",
            "test_sampler_trace.py::test_kv_bytes_flat_after_bank_full_and_ordering",
            "test_sampler_trace.py::test_every_compression_and_kv_source_runs_with_same_memory",
            "test_sampler_trace.py::test_pipeline_validates_and_streams_deterministically",
            "test_sampler_trace.py::test_streaming_decode_equals_full_decode"]
FIRST = {  # the tests most likely to notice a bug in each file run first (pytest -x)
    "cache": ["test_cache_decisions.py"], "selection": ["test_selection_scores.py"], "rope": ["test_rope_direction.py"],
    "attention": ["test_parity_dynamic.py"], "sampler": ["test_parity_dynamic.py", "test_stream_contract.py"],
    "memory": ["test_memory_edges.py"], "compression": ["test_compressed_positions.py"],
    "block_memory": ["test_block_memory.py", "test_compressed_positions.py", "test_parity_dynamic.py"],
    "scheduler": ["test_scheduler.py", "test_sampler_trace.py", "test_parity_dynamic.py"],
    "passes": ["test_parity_dynamic.py"],
}

# the live-steering path (slow to set up: only the sampler's mutants); the re-cache at a
# prompt switch (block memory's)
LAST = {"sampler": ["test_camera.py"], "block_memory": ["test_switch.py"]}

# --- running them ---------------------------------------------------------------------
class Failures:
    """pytest plugin: the node ids that failed."""

    def __init__(self):
        self.failed = []

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)

    def pytest_collectreport(self, report):
        if report.failed:
            self.failed.append(f"collect:{report.nodeid}")


def tests_for(module: str, all_failures: bool) -> list[str]:
    first = FIRST[module]
    files = first + [f for f in DECISIONS + OLDER if f not in first] + LAST.get(module, [])
    args = [os.path.join("tests", f) for f in files] + ["-q", "-p", "no:cacheprovider", "--no-header", "-p",
                                                        "no:warnings"]
    args += [x for d in DESELECT for x in ("--deselect", os.path.join("tests", d))]
    return args if all_failures else args + ["-x"]


def run_in_child(workdir: str, args: list[str], timeout: int, result_path: str) -> tuple[str, float]:
    start = time.time()
    pid = os.fork()
    if pid == 0:  # child: fresh package, silent pytest
        code = 3
        try:
            signal.alarm(timeout)
            os.chdir(workdir)
            sys.path.insert(0, workdir)
            import packforcing

            if not packforcing.__file__.startswith(workdir):
                code = 77  # would test the worktree, not the mutant
                raise SystemExit(f"packforcing imported from {packforcing.__file__}")
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1), os.dup2(devnull, 2)
            import pytest

            failures = Failures()
            code = pytest.main(args, plugins=[failures])
            with open(result_path, "w") as f:
                json.dump(failures.failed, f)
        finally:
            os._exit(int(code))
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:  # interrupted: take the child down with us
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    elapsed = time.time() - start
    if os.WIFSIGNALED(status):
        return ("timeout" if os.WTERMSIG(status) == signal.SIGALRM else "crashed"), elapsed
    code = os.WEXITSTATUS(status)
    if code == 77:
        sys.exit("the child imported packforcing from outside the temporary copy; is it installed in the venv?")
    if code not in (0, 1, 2, 3):  # 4: bad pytest arguments, 5: no tests collected
        sys.exit(f"pytest exited with {code}: the run itself is broken")
    return ("survived" if code == 0 else "killed"), elapsed


def copy_repo(dest: str) -> None:
    for part in ("packforcing", "tests"):
        shutil.copytree(os.path.join(ROOT, part), os.path.join(dest, part),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "mutation"))


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", default=",".join(TARGETS), help="modules of packforcing/ to mutate (comma-separated)")
    p.add_argument("--sample", type=int, default=0, help="test a seeded random sample of this many mutants (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=int, default=180, help="seconds per mutant")
    p.add_argument("--only", default="", help="file.py:line[,file.py:line...]: only mutants on these lines")
    p.add_argument("--list", action="store_true", help="print the mutants and stop")
    p.add_argument("--all-failures", action="store_true",
                   help="run every test per mutant (no -x) and list all that fail")
    p.add_argument("--out", default="", help="also write the JSON here")
    args = p.parse_args(argv)
    args.modules = [m.strip().removesuffix(".py") for m in args.files.split(",") if m.strip()]
    bad = [m for m in args.modules if m not in TARGETS]
    if bad:
        sys.exit(f"--files: {bad} are not mutation targets; choose from {', '.join(TARGETS)}")
    return args


def choose(args, workdir: str) -> tuple[list[dict], int]:
    """(the mutants to run, how many were generated) from the copy in `workdir`: the copy
    is made first, so a change to the worktree while the run starts cannot shift lines."""
    mutants = [dict(mu, module=m) for m in args.modules
               for mu in mutants_of(os.path.join(workdir, "packforcing", m + ".py"), workdir)]
    if args.only:
        wanted = {(f.split(":")[0].removesuffix(".py"), int(f.split(":")[1])) for f in args.only.split(",")}
        mutants = [mu for mu in mutants if (mu["module"], mu["line"]) in wanted]
    total = len(mutants)
    if args.sample and args.sample < total:
        mutants = sorted(random.Random(args.seed).sample(mutants, args.sample),
                         key=lambda mu: (mu["module"], mu["line"]))
    return mutants, total


def run_one(mu: dict, workdir: str, args, result_path: str) -> tuple[str, float]:
    """One mutant written into the copy, its tests run in a child, the file restored."""
    target = os.path.join(workdir, mu["file"])
    original = open(target).read()
    lines = original.split("\n")
    if mu["before"] not in lines[mu["line"] - 1]:
        sys.exit(f"{mu['file']}:{mu['line']} no longer reads `{mu['before']}`: the copy changed under the run")
    lines[mu["line"] - 1] = lines[mu["line"] - 1].replace(mu["before"], mu["after"], 1)
    try:
        with open(target, "w") as f:
            f.write("\n".join(lines))
        if os.path.exists(result_path):
            os.remove(result_path)
        return run_in_child(workdir, tests_for(mu["module"], args.all_failures), args.timeout, result_path)
    finally:
        with open(target, "w") as f:
            f.write(original)


def run_all(mutants: list[dict], total: int, workdir: str, args) -> dict:
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    sys.dont_write_bytecode = True
    import diffusers.models.autoencoders.autoencoder_kl_wan  # noqa: F401
    import diffusers.models.transformers.transformer_wan  # noqa: F401
    import torch  # noqa: F401  imported once, before forking; the package is imported fresh per child

    torch.set_num_threads(1)
    result_path = os.path.join(workdir, "failed.json")
    report = {"mutants_generated": total, "mutants_run": len(mutants),
              "sample_seed": args.seed if args.sample else None,
              "killed": 0, "survived": [], "timeouts": [], "crashed": [], "killed_by": {}}
    baseline, seconds = run_in_child(workdir, tests_for("cache", True), args.timeout * 3, result_path)
    if baseline != "survived":
        failed = open(result_path).read() if os.path.exists(result_path) else ""
        sys.exit(f"the unmutated tests do not pass ({baseline}); fix them first: {failed}")
    report["baseline_seconds"] = round(seconds, 1)
    for i, mu in enumerate(mutants):
        outcome, seconds = run_one(mu, workdir, args, result_path)
        failed = json.load(open(result_path)) if os.path.exists(result_path) else []
        where = f"{mu['file']}:{mu['line']}"
        if outcome == "killed":
            report["killed"] += 1
            report["killed_by"][f"{where} {mu['change']}"] = failed
        else:
            entry = {"at": where, "change": mu["change"], "after": mu["after"]}
            report[{"survived": "survived", "timeout": "timeouts", "crashed": "crashed"}[outcome]].append(entry)
        print(f"[{i + 1}/{len(mutants)}] {outcome:8s} {seconds:5.1f}s {where} {mu['change']}", file=sys.stderr,
              flush=True)
    detected = report["killed"] + len(report["timeouts"]) + len(report["crashed"])
    report["kill_rate"] = round(detected / len(mutants), 4) if mutants else None
    return report


def main(argv=None):
    args = parse(argv)
    workdir = tempfile.mkdtemp(prefix="packforcing-mutants-")
    try:
        copy_repo(workdir)
        mutants, total = choose(args, workdir)
        if args.list:
            for mu in mutants:
                print(f"{mu['file']}:{mu['line']}: {mu['change']}\n    - {mu['before']}\n    + {mu['after']}")
            print(f"{len(mutants)} of {total} mutants")
            return
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temporary copy is removed
        report = run_all(mutants, total, workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
