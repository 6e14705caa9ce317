"""Session state (app/sessions.py) changes only under its lock: handlers run on several
threads at once. Checked on the source, so a change made outside the lock fails here
whether or not a race happens to show in a run."""

import ast
from pathlib import Path

SESSIONS = Path(__file__).resolve().parent.parent / "app" / "sessions.py"
STATE = {"_stop_flags", "_run_dirs", "_running", "_ended", "_live"}
MUTATORS = {"pop", "setdefault", "add", "discard", "clear", "update", "append", "remove"}


def _changes_state(node) -> bool:
    targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete))
               else [node.target] if isinstance(node, ast.AugAssign) else [])
    if any(isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id in STATE for t in targets):
        return True
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS
            and isinstance(node.func.value, ast.Name) and node.func.value.id in STATE)


def unlocked_changes(source: str) -> list[int]:
    """Lines that change session state outside `with _lock:`."""
    found = []

    def visit(node, locked):
        if isinstance(node, ast.With) and any(ast.unparse(item.context_expr) == "_lock" for item in node.items):
            locked = True
        if not locked and _changes_state(node):
            found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, locked)

    visit(ast.parse(source), False)
    return found


def test_session_state_changes_only_under_the_lock():
    assert unlocked_changes(SESSIONS.read_text()) == []


def test_the_check_sees_each_kind_of_change():
    """Negative control: the changes today's code made outside the lock, and one inside it."""
    source = ("def a(s):\n    _stop_flags[s] = 1\n"
              "def b(s):\n    del _stop_flags[s]\n"
              "def c(s):\n    return _stop_flags.setdefault(s, 1)\n"
              "def d(s):\n    _stop_flags.pop(s).set()\n"
              "def e(s):\n    with _lock:\n        _running[s] += 1\n")
    assert unlocked_changes(source) == [2, 4, 6, 8]
