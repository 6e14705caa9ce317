"""Mutants of a source file: plausible one-line bugs (see run.py for the kinds), made from
the AST and kept only where the changed file still compiles."""

from __future__ import annotations

import ast
import os

BINOPS = {ast.Add: ("+", ["-"]), ast.Sub: ("-", ["+"]), ast.Mult: ("*", ["/"]), ast.Div: ("/", ["*", "//"]),
          ast.FloorDiv: ("//", ["/", "*"]), ast.Mod: ("%", ["//"]), ast.Pow: ("**", ["*"])}
CMPOPS = {ast.Lt: ("<", ["<=", ">"]), ast.LtE: ("<=", ["<", ">="]), ast.Gt: (">", [">=", "<"]),
          ast.GtE: (">=", [">", "<="]),
          ast.Eq: ("==", ["!="]), ast.NotEq: ("!=", ["=="]), ast.In: ("in", ["not in"]), ast.NotIn: ("not in", ["in"]),
          ast.Is: ("is", ["is not"]), ast.IsNot: ("is not", ["is"])}
FUNC_SWAPS = {"min": "max", "max": "min"}
# integers that only lay tensors out (dims to transpose, flatten, repeat...): changing them
# fails at once with a shape error, so such mutants would only inflate the kill rate
LAYOUT = {"transpose", "flatten", "unflatten", "repeat", "permute", "view", "reshape", "expand", "unbind", "split",
          "chunk", "squeeze", "unsqueeze", "cat", "stack", "repeat_interleave"}
METHOD_SWAPS = {"sum": "mean", "mean": "sum", "cos": "sin", "sin": "cos", "max": "min", "min": "max",
                "floor": "ceil", "ceil": "floor", "keys": "values"}


class Mutator(ast.NodeVisitor):
    """Collects (line, col, end_col, replacement, description) edits confined to one line."""

    def __init__(self, lines: list[str]):
        self.lines, self.edits, self.skip, self.in_init = lines, [], set(), False

    def add(self, node_or_pos, new: str, what: str):
        line, col, end = node_or_pos if isinstance(node_or_pos, tuple) else (node_or_pos.lineno, node_or_pos.col_offset,
                                                                             node_or_pos.end_col_offset)
        old = self.lines[line - 1][col:end]
        if old != new:
            self.edits.append((line, col, end, new, what or f"{old} -> {new}"))

    def text(self, node) -> str:
        return self.lines[node.lineno - 1][node.col_offset:node.end_col_offset]

    def one_line(self, node) -> bool:
        return getattr(node, "lineno",
                       None) is not None and node.lineno == node.end_lineno and node.lineno not in self.skip

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
            self.add(node, self.text(node.operand),
                     f"drop {'not' if isinstance(node.op, ast.Not) else 'minus'} in `{self.text(node)}`")
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
                self.add((f.lineno, col, f.end_col_offset), METHOD_SWAPS[f.attr],
                         f".{f.attr}( -> .{METHOD_SWAPS[f.attr]}( in `{self.text(node)}`")
            for kw in node.keywords:
                if kw.arg == "reverse" and isinstance(kw.value, ast.Constant):
                    self.add(kw.value, str(not kw.value.value), f"reverse={kw.value.value} -> {not kw.value.value}")
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        if name in LAYOUT:  # the tensors are still mutated, their layout integers are not
            self.visit(node.func)
            for arg in node.args + [kw.value for kw in node.keywords]:
                if not (isinstance(arg, (ast.Constant, ast.Tuple))
                        or (isinstance(arg, ast.UnaryOp) and isinstance(arg.operand, ast.Constant))):
                    self.visit(arg)
            return
        self.generic_visit(node)

    def visit_Subscript(self, node):
        if self.one_line(node):
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            for s in parts:
                if isinstance(s, ast.Slice):
                    self.slice(s)
                elif isinstance(s, ast.Constant) and s.value == 0 and isinstance(s.value,
                                                                                 int) and not isinstance(s.value, bool):
                    self.add(s, "-1", f"[0] -> [-1] in `{self.text(node)}`")
                elif isinstance(s, ast.UnaryOp) and isinstance(s.op, ast.USub) and getattr(s.operand, "value",
                                                                                           None) == 1:
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


def mutants_of(path: str, root: str) -> list[dict]:
    source = open(path).read()
    lines = source.split("\n")
    tree = ast.parse(source)
    m = Mutator(lines)
    # skip docstring/comment lines before visiting so nested nodes respect them
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None),
                                                     ast.Constant) and isinstance(node.value.value, str):
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
