"""The layout shows the architecture: the method's core imports nothing of the embedded
model (a client of the engine, found through the registry by import path), packforcing's
imports form no cycle, no module imports another's private names, and no code in app/ or
the pipeline branches on a model's name."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for d in ("packforcing", "app", "visualizers", "bench")
           for p in sorted((ROOT / d).rglob("*.py"))] + [ROOT / "app.py"]
TESTS = sorted((ROOT / "tests").rglob("*.py"))
MAX_FUNCTION_LINES, MAX_FILE_LINES = 80, 400
CORE = sorted((ROOT / "packforcing").glob("*.py")) + sorted((ROOT / "packforcing" / "backbones").glob("*.py"))
MODEL_NAMES = {"embedded", "tiny-random", "wan-1.3b"}


def imported_modules(source: str, module: str) -> set[str]:
    """Absolute names of every module `source` (the module `module`) imports."""
    package = module.rsplit(".", 1)[0].split(".")
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            names.add(prefix)
            names |= {f"{prefix}.{a.name}" for a in node.names}
    return names


def model_name_comparisons(source: str) -> list[int]:
    """Lines comparing something with a model's name (==, !=, in, not in)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for operand in operands:
                constants = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                if any(isinstance(c, ast.Constant) and c.value in MODEL_NAMES for c in constants):
                    lines.append(node.lineno)
    return lines


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """{module: the modules among `sources` it imports}, from the AST (imports inside
    functions included: a lazy import still runs the other module's top level)."""
    return {m: {n for n in imported_modules(src, m) if n in sources and n != m} for m, src in sources.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle [a, b, ..., a], or [] when the graph has none (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            if cycle:
                return cycle
    return []


def test_packforcing_imports_form_no_cycle():
    sources = {_module_name(p): p.read_text() for p in sorted((ROOT / "packforcing").rglob("*.py"))}
    graph = import_graph(sources)
    assert graph["packforcing.sampler"] >= {"packforcing.block_memory", "packforcing.scheduler"}  # the graph is read
    assert find_cycle(graph) == []


def test_cycle_check_sees_a_circle():
    """Negative control: a two-module circle through a lazy import, and a longer one."""
    sources = {"packforcing.a": "from .b import f", "packforcing.b": "def g():\n    from . import a",
               "packforcing.c": ""}
    assert find_cycle(import_graph(sources)) == ["packforcing.a", "packforcing.b", "packforcing.a"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": set()}) == []


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_nothing_of_the_embedded_model(path):
    imports = imported_modules(path.read_text(), _module_name(path))
    assert not [m for m in imports if m.startswith("packforcing.embedded")]


def test_import_check_sees_relative_and_absolute_imports():
    """Negative control: the checker flags each way of importing the embedded package."""
    for source in ("from .embedded import model", "from .embedded.model import X", "import packforcing.embedded.world",
                   "from packforcing import embedded"):
        imports = imported_modules(source, "packforcing.pipeline")
        assert any(m.startswith("packforcing.embedded") for m in imports), source
    assert "packforcing.embedded.model" in imported_modules("from ..embedded.model import X",
                                                            "packforcing.backbones.wan")


def test_importing_the_core_loads_no_embedded_module():
    core = ", ".join(_module_name(p) for p in CORE if p.name != "__main__.py")
    code = f"import sys, {core}; print(sorted(m for m in sys.modules if m.startswith('packforcing.embedded')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("path", sorted((ROOT / "app").glob("*.py")) + [ROOT / "packforcing" / "pipeline.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_model_name_comparisons(path):
    assert model_name_comparisons(path.read_text()) == []


def test_name_check_sees_comparisons():
    """Negative control."""
    assert model_name_comparisons('if name == "embedded":\n    pass') == [1]
    assert model_name_comparisons('x = name in ("tiny-random", "other")') == [1]
    assert model_name_comparisons('label = "embedded"') == []


def test_registry_lists_every_model_with_its_defaults():
    from packforcing import registry
    from packforcing.config import PackForcingConfig
    from packforcing.embedded.model import EMBEDDED_CONFIG

    entries = registry.entries()
    assert set(entries) == MODEL_NAMES
    assert entries["embedded"].default_config == EMBEDDED_CONFIG and entries["embedded"].evaluator is not None
    assert entries["tiny-random"].default_config == PackForcingConfig() and entries["tiny-random"].evaluator is None
    assert all(e.description for e in entries.values())
    with pytest.raises(ValueError, match="model='nope' is not known; choose one of embedded"):
        registry.get("nope")


def function_lengths(source: str) -> dict[str, int]:
    """Lines of every function and method (decorators and docstring included), by qualified name."""
    lengths = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    lengths[name] = child.end_lineno - start + 1
                visit(child, name + ".")

    visit(ast.parse(source), "")
    return lengths


def test_no_function_over_80_lines_and_no_file_over_400():
    long_functions, long_files = {}, {}
    for path in SOURCES + TESTS:
        source = path.read_text()
        where = str(path.relative_to(ROOT))
        if len(source.splitlines()) > MAX_FILE_LINES:
            long_files[where] = len(source.splitlines())
        long_functions |= {f"{where}:{name}": n for name,
                           n in function_lengths(source).items() if n > MAX_FUNCTION_LINES}
    assert long_functions == {} and long_files == {}


def test_length_check_counts_nested_functions_and_decorators():
    """Negative control, on a hand-counted source."""
    source = "class A:\n    @staticmethod\n    def f():\n        def g():\n            pass\n        return 1\n"
    assert function_lengths(source) == {"A.f": 5, "A.f.g": 2}


def test_ruff_is_clean():
    """pyproject.toml's rules (bugs, unused names, import order, lines of at most 120) find nothing."""
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_sees_a_line_of_121_characters():
    """Negative control: the same configuration flags one character too many, and not 120."""
    def check(line: str) -> str:
        return subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "--stdin-filename",
                               "probe.py", "-"], cwd=ROOT, input=line + "\n", capture_output=True, text=True).stdout

    assert "E501" in check("x = " + repr("a" * 115)) and "E501" not in check("x = " + repr("a" * 114))


# private names of other libraries the code has to reach (diffusers' decoder cache size,
# torch's fused foreach ops) and the marker `install` leaves on a transformer
# our tags on a diffusers model (_packforcing_*), and torch's compiler config and counters
# (torch._dynamo: the documented way to allow or forbid recompiles and count graphs)
FOREIGN_PRIVATE = {"_cached_conv_counts", "_foreach_copy_", "_foreach_lerp_", "_packforcing_slot",
                   "_packforcing_compiled", "_dynamo"}


def private_uses(source: str) -> list[str]:
    """`x._name` where x is not self or cls: something reaching into another object."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls") and node.attr not in FOREIGN_PRIVATE:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_calls_another_objects_private_members():
    found = {str(p.relative_to(ROOT)): private_uses(p.read_text()) for p in SOURCES}
    assert {k: v for k, v in found.items() if v} == {}


def private_imports(source: str) -> list[str]:
    """Imports of a private name (`from .model import _Encoder`) or from a private module
    (`from ._style import x`); torch's compiler config (_dynamo) is allowed, see above."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names = [*(node.module or "").split("."), *(a.name for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [part for a in node.names for part in a.name.split(".")]
        else:
            continue
        if any(n.startswith("_") and not n.startswith("__") and n not in FOREIGN_PRIVATE for n in names):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_imports_another_modules_private_names():
    found = {str(p.relative_to(ROOT)): private_imports(p.read_text()) for p in SOURCES + TESTS}
    assert {k: v for k, v in found.items() if v} == {}


def test_private_import_check_sees_private_names():
    """Negative control: the imports this check was written for are flagged; a private
    alias, __future__ and torch's _dynamo are not."""
    flagged = ("from .model import A, _PromptEncoder\nfrom ._style import x\nimport pkg._impl\n"
               "def f():\n    from m import _g")
    assert [f.split(":")[0] for f in private_imports(flagged)] == ["1", "2", "3", "5"]
    assert private_imports("from __future__ import annotations\nfrom . import switches as _s\nfrom torch._dynamo "
                           "import utils") == []


def test_private_check_sees_reaching_in():
    """Negative control: the trainer's old calls are flagged, a class's own are not."""
    assert private_uses("v = sampler._forward(x)\nsampler.session._select(q)") == ["1: sampler._forward",
                                                                                   "2: sampler.session._select"]
    assert private_uses("class A:\n    def f(self):\n        return self._g()") == []
