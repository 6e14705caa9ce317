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
import ast
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGETS = ("cache", "selection", "rope", "attention", "sampler", "memory", "compression")
DECISIONS = ["test_cache_decisions.py", "test_selection_scores.py", "test_rope_direction.py", "test_compressed_positions.py",
             "test_memory_edges.py", "test_parity_dynamic.py", "test_stream_contract.py"]
OLDER = ["test_rope_selection.py", "test_compression_memory.py", "test_parity.py", "test_sampler_trace.py"]
# the slow, VAE-heavy tests are left out of the per-mutant run (they pin frames, not decisions)
DESELECT = ["test_compression_memory.py::test_lr_branch_real_geometry_uses_frozen_vae",
            "test_sampler_trace.py::test_kv_bytes_flat_after_bank_full_and_ordering",
            "test_sampler_trace.py::test_every_compression_and_kv_source_runs_with_same_memory",
            "test_sampler_trace.py::test_pipeline_validates_and_streams_deterministically",
            "test_sampler_trace.py::test_streaming_decode_equals_full_decode"]
FIRST = {  # the tests most likely to notice a bug in each file run first (pytest -x)
    "cache": ["test_cache_decisions.py"], "selection": ["test_selection_scores.py"], "rope": ["test_rope_direction.py"],
    "attention": ["test_parity_dynamic.py"], "sampler": ["test_parity_dynamic.py", "test_stream_contract.py"], "memory": ["test_memory_edges.py"],
    "compression": ["test_compressed_positions.py"],
}

LAST = {"sampler": ["test_camera.py"]}  # the live-steering path (slow to set up: only the sampler's mutants)

BINOPS = {ast.Add: ("+", ["-"]), ast.Sub: ("-", ["+"]), ast.Mult: ("*", ["/"]), ast.Div: ("/", ["*", "//"]),
          ast.FloorDiv: ("//", ["/", "*"]), ast.Mod: ("%", ["//"]), ast.Pow: ("**", ["*"])}
CMPOPS = {ast.Lt: ("<", ["<=", ">"]), ast.LtE: ("<=", ["<", ">="]), ast.Gt: (">", [">=", "<"]), ast.GtE: (">=", [">", "<="]),
          ast.Eq: ("==", ["!="]), ast.NotEq: ("!=", ["=="]), ast.In: ("in", ["not in"]), ast.NotIn: ("not in", ["in"]),
          ast.Is: ("is", ["is not"]), ast.IsNot: ("is not", ["is"])}
FUNC_SWAPS = {"min": "max", "max": "min"}
# integers that only lay tensors out (dims to transpose, flatten, repeat...): changing them
# fails at once with a shape error, so such mutants would only inflate the kill rate
LAYOUT = {"transpose", "flatten", "unflatten", "repeat", "permute", "view", "reshape", "expand", "unbind", "split",
          "chunk", "squeeze", "unsqueeze", "cat", "stack", "repeat_interleave"}
METHOD_SWAPS = {"sum": "mean", "mean": "sum", "cos": "sin", "sin": "cos", "max": "min", "min": "max",
                "floor": "ceil", "ceil": "floor", "keys": "values"}


# --- generating mutants ---------------------------------------------------------------
class Mutator(ast.NodeVisitor):
    """Collects (line, col, end_col, replacement, description) edits confined to one line."""

    def __init__(self, lines: list[str]):
        self.lines, self.edits, self.skip, self.in_init = lines, [], set(), False

    def add(self, node_or_pos, new: str, what: str):
        line, col, end = node_or_pos if isinstance(node_or_pos, tuple) else (node_or_pos.lineno, node_or_pos.col_offset, node_or_pos.end_col_offset)
        old = self.lines[line - 1][col:end]
        if old != new:
            self.edits.append((line, col, end, new, what or f"{old} -> {new}"))

    def text(self, node) -> str:
        return self.lines[node.lineno - 1][node.col_offset:node.end_col_offset]

    def one_line(self, node) -> bool:
        return getattr(node, "lineno", None) is not None and node.lineno == node.end_lineno and node.lineno not in self.skip

    def token_between(self, a, b, token: str):
        """Column span of `token` between the end of node a and the start of node b (same line)."""
        if a.end_lineno != b.lineno or a.lineno != b.lineno:
            return None
        gap = self.lines[a.lineno - 1][a.end_col_offset:b.col_offset]
        at = gap.find(token)
        while at >= 0 and token in ("*", "/") and (gap[at:at + 2] in ("**", "//") or (at and gap[at - 1] in "*/")):
            at = gap.find(token, at + 2)
        return None if at < 0 else (a.lineno, a.end_col_offset + at, a.end_col_offset + at + len(token))

    # docstrings, error messages and annotations are not behaviour
    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            self.skip.update(range(node.lineno, node.end_lineno + 1))
            return
        self.delete(node)
        self.generic_visit(node)

    def visit_Raise(self, node):
        self.skip.update(range(node.lineno, node.end_lineno + 1))

    def visit_JoinedStr(self, node):
        return

    def visit_arg(self, node):
        return  # annotations

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_FunctionDef(self, node):
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        self.in_init = node.name == "__init__"  # a forgotten attribute there only raises AttributeError
        for stmt in node.body:
            self.visit(stmt)
        self.in_init = False

    def delete(self, node):
        if self.one_line(node) and not self.in_init:
            line = self.lines[node.lineno - 1]
            if line[:node.col_offset].strip() == "" and line[node.end_col_offset:].strip() == "":
                self.add((node.lineno, node.col_offset, node.end_col_offset), "pass", f"delete `{self.text(node)}`")

    def visit_Assign(self, node):
        if any(isinstance(t, (ast.Attribute, ast.Subscript)) for t in node.targets):
            self.delete(node)  # a forgotten state update; deleting a local would only raise NameError
        self.generic_visit(node)

    def visit_Delete(self, node):
        self.delete(node)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self.delete(node)
        symbol, swaps = BINOPS.get(type(node.op), (None, []))
        if symbol and self.one_line(node):
            span = self.token_between(node.target, node.value, symbol + "=")
            for new in swaps[:1]:
                if span:
                    self.add(span, new + "=", f"{symbol}= -> {new}=")
        self.generic_visit(node)

    def visit_Break(self, node):
        self.add(node, "continue", "break -> continue") if self.one_line(node) else None

    def visit_BinOp(self, node):
        symbol, swaps = BINOPS.get(type(node.op), (None, []))
        if symbol == "+" and any(self.sequence(x) for x in (node.left, node.right)):
            symbol = None  # list + list: "-" would only raise TypeError
        if symbol and self.one_line(node):
            span = self.token_between(node.left, node.right, symbol)
            for new in swaps if span else []:
                self.add(span, new, f"{symbol} -> {new} in `{self.text(node)}`")
        self.generic_visit(node)

    @staticmethod
    def sequence(node) -> bool:
        return isinstance(node, (ast.List, ast.ListComp, ast.Tuple, ast.JoinedStr)) or (
            isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("list", "tuple")) or (
            isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and Mutator.sequence(node.left))

    def visit_Compare(self, node):
        if self.one_line(node):
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                symbol, swaps = CMPOPS[type(op)]
                span = self.token_between(left, right, symbol)
                for new in swaps if span else []:
                    self.add(span, new, f"{symbol} -> {new} in `{self.text(node)}`")
                left = right
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        if self.one_line(node):
            symbol, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            span = self.token_between(node.values[0], node.values[1], symbol)
            if span:
                self.add(span, new, f"{symbol} -> {new} in `{self.text(node)}`")
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if self.one_line(node) and isinstance(node.op, (ast.Not, ast.USub)):
            self.add(node, self.text(node.operand), f"drop {'not' if isinstance(node.op, ast.Not) else 'minus'} in `{self.text(node)}`")
        self.generic_visit(node)

    def visit_If(self, node):
        if self.one_line(node.test) and not isinstance(node.test, (ast.UnaryOp, ast.Compare, ast.BoolOp)):
            self.add(node.test, f"not {self.text(node.test)}", f"invert `if {self.text(node.test)}`")
        self.generic_visit(node)

    def visit_Constant(self, node):
        if not self.one_line(node) or isinstance(node.value, str) or node.value is None:
            return
        if isinstance(node.value, bool):
            self.add(node, str(not node.value), f"{node.value} -> {not node.value}")
        elif isinstance(node.value, int):
            for new in {node.value + 1, node.value - 1} - {-1}:
                self.add(node, str(new), f"{node.value} -> {new} at `{self.line_text(node)}`")
        elif isinstance(node.value, float):
            for new in sorted({node.value + 1.0, node.value - 1.0 if node.value else 1.0}):
                self.add(node, repr(new), f"{node.value} -> {new} at `{self.line_text(node)}`")

    def line_text(self, node):
        return self.lines[node.lineno - 1].strip()[:70]

    def visit_Call(self, node):
        if self.one_line(node):
            f = node.func
            if isinstance(f, ast.Name) and f.id in FUNC_SWAPS:
                self.add(f, FUNC_SWAPS[f.id], f"{f.id} -> {FUNC_SWAPS[f.id]} in `{self.text(node)}`")
            if isinstance(f, ast.Name) and f.id in ("sorted", "reversed") and len(node.args) == 1 and not node.keywords:
                self.add(node, f"list({self.text(node.args[0])})", f"drop {f.id}() in `{self.text(node)}`")
            if isinstance(f, ast.Name) and f.id == "next" and node.args and isinstance(node.args[0], ast.Call) \
                    and getattr(node.args[0].func, "id", None) == "iter":
                self.add(node, f"list({self.text(node.args[0].args[0])})[-1]", f"oldest -> newest: `{self.text(node)}`")
            if isinstance(f, ast.Attribute) and f.attr in METHOD_SWAPS and f.end_lineno == f.lineno:
                col = f.end_col_offset - len(f.attr)
                self.add((f.lineno, col, f.end_col_offset), METHOD_SWAPS[f.attr], f".{f.attr}( -> .{METHOD_SWAPS[f.attr]}( in `{self.text(node)}`")
            for kw in node.keywords:
                if kw.arg == "reverse" and isinstance(kw.value, ast.Constant):
                    self.add(kw.value, str(not kw.value.value), f"reverse={kw.value.value} -> {not kw.value.value}")
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        if name in LAYOUT:  # the tensors are still mutated, their layout integers are not
            self.visit(node.func)
            for arg in node.args + [kw.value for kw in node.keywords]:
                if not (isinstance(arg, (ast.Constant, ast.Tuple)) or (isinstance(arg, ast.UnaryOp) and isinstance(arg.operand, ast.Constant))):
                    self.visit(arg)
            return
        self.generic_visit(node)

    def visit_Subscript(self, node):
        if self.one_line(node):
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            for s in parts:
                if isinstance(s, ast.Slice):
                    self.slice(s)
                elif isinstance(s, ast.Constant) and s.value == 0 and isinstance(s.value, int) and not isinstance(s.value, bool):
                    self.add(s, "-1", f"[0] -> [-1] in `{self.text(node)}`")
                elif isinstance(s, ast.UnaryOp) and isinstance(s.op, ast.USub) and getattr(s.operand, "value", None) == 1:
                    self.add(s, "0", f"[-1] -> [0] in `{self.text(node)}`")
        self.generic_visit(node)

    def slice(self, s):
        lo, hi, step = (self.text(x) if x is not None else "" for x in (s.lower, s.upper, s.step))
        if step:
            self.add(s, f"{lo}:{hi}", f"drop the stride of [{self.text(s)}]")
        elif lo and not hi:
            self.add(s, f":{lo}", f"[{lo}:] -> [:{lo}]")
        elif hi and not lo:
            self.add(s, f"{hi}:", f"[:{hi}] -> [{hi}:]")


def mutants_of(path: str, root: str = ROOT) -> list[dict]:
    source = open(path).read()
    lines = source.split("\n")
    tree = ast.parse(source)
    m = Mutator(lines)
    # skip docstring/comment lines before visiting so nested nodes respect them
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) and isinstance(node.value.value, str):
            m.skip.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            m.skip.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            m.skip.update(range(node.lineno, node.end_lineno + 1))
    m.visit(tree)
    out, seen = [], set()
    rel = os.path.relpath(path, root)
    for line, col, end, new, what in m.edits:
        text = lines[line - 1]
        if text.strip().startswith("#"):
            continue
        mutated_line = text[:col] + new + text[end:]
        key = (line, mutated_line)
        if key in seen:
            continue
        seen.add(key)
        mutated = lines[:line - 1] + [mutated_line] + lines[line:]
        try:
            compile("\n".join(mutated), path, "exec")
        except SyntaxError:
            continue
        out.append({"file": rel, "line": line, "change": what, "before": text.strip(), "after": mutated_line.strip()})
    return out


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
    args = [os.path.join("tests", f) for f in files] + ["-q", "-p", "no:cacheprovider", "--no-header", "-p", "no:warnings"]
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", default=",".join(TARGETS), help="modules of packforcing/ to mutate (comma-separated)")
    p.add_argument("--sample", type=int, default=0, help="test a seeded random sample of this many mutants (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=int, default=180, help="seconds per mutant")
    p.add_argument("--only", default="", help="file.py:line[,file.py:line...]: only mutants on these lines")
    p.add_argument("--list", action="store_true", help="print the mutants and stop")
    p.add_argument("--all-failures", action="store_true", help="run every test per mutant (no -x) and list all that fail")
    p.add_argument("--out", default="", help="also write the JSON here")
    args = p.parse_args()
    modules = [m.strip().removesuffix(".py") for m in args.files.split(",") if m.strip()]
    bad = [m for m in modules if m not in TARGETS]
    if bad:
        sys.exit(f"--files: {bad} are not mutation targets; choose from {', '.join(TARGETS)}")
    # the copy is made first and the mutants come from it, so a change to the worktree
    # while the run starts cannot shift the lines under them
    workdir = tempfile.mkdtemp(prefix="packforcing-mutants-")
    copy_repo(workdir)
    try:
        mutants = [dict(mu, module=m) for m in modules for mu in mutants_of(os.path.join(workdir, "packforcing", m + ".py"), workdir)]
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    if args.only:
        wanted = {(f.split(":")[0].removesuffix(".py"), int(f.split(":")[1])) for f in args.only.split(",")}
        mutants = [mu for mu in mutants if (mu["module"], mu["line"]) in wanted]
    total = len(mutants)
    if args.sample and args.sample < total:
        mutants = sorted(random.Random(args.seed).sample(mutants, args.sample), key=lambda mu: (mu["module"], mu["line"]))
    if args.list:
        shutil.rmtree(workdir, ignore_errors=True)
        for mu in mutants:
            print(f"{mu['file']}:{mu['line']}: {mu['change']}\n    - {mu['before']}\n    + {mu['after']}")
        print(f"{len(mutants)} of {total} mutants")
        return

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temporary copy is removed
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    sys.dont_write_bytecode = True
    import diffusers.models.autoencoders.autoencoder_kl_wan  # noqa: F401
    import diffusers.models.transformers.transformer_wan  # noqa: F401
    import torch  # noqa: F401  imported once, before forking; the package is imported fresh per child

    torch.set_num_threads(1)
    result_path = os.path.join(workdir, "failed.json")
    report = {"mutants_generated": total, "mutants_run": len(mutants), "sample_seed": args.seed if args.sample else None,
              "killed": 0, "survived": [], "timeouts": [], "crashed": [], "killed_by": {}}
    try:
        baseline, seconds = run_in_child(workdir, tests_for("cache", True), args.timeout * 3, result_path)
        if baseline != "survived":
            sys.exit(f"the unmutated tests do not pass ({baseline}); fix them first: {open(result_path).read() if os.path.exists(result_path) else ''}")
        report["baseline_seconds"] = round(seconds, 1)
        for i, mu in enumerate(mutants):
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
                outcome, seconds = run_in_child(workdir, tests_for(mu["module"], args.all_failures), args.timeout, result_path)
            finally:
                with open(target, "w") as f:
                    f.write(original)
            failed = json.load(open(result_path)) if os.path.exists(result_path) else []
            where = f"{mu['file']}:{mu['line']}"
            entry = {"at": where, "change": mu["change"], "after": mu["after"]}
            if outcome == "killed":
                report["killed"] += 1
                report["killed_by"][f"{where} {mu['change']}"] = failed
            else:
                report[{"survived": "survived", "timeout": "timeouts", "crashed": "crashed"}[outcome]].append(entry)
            print(f"[{i + 1}/{len(mutants)}] {outcome:8s} {seconds:5.1f}s {where} {mu['change']}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    run = report["mutants_run"]
    detected = report["killed"] + len(report["timeouts"]) + len(report["crashed"])
    report["kill_rate"] = round(detected / run, 4) if run else None
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
