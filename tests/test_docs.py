"""The documents a newcomer reads: a README of at most 250 lines with the two commands in
its first 30, and links that stay inside the repository and resolve."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "assets" / "embedded" / "README.md", ROOT / "bench" / "README.md",
        ROOT / "docs" / "design.md", ROOT / "docs" / "experiments.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def bad_links(path: Path, root: Path = ROOT) -> list[str]:
    """Links of a markdown file that leave `root` or point at nothing."""
    bad = []
    for target in LINK.findall(path.read_text()):
        resolved = (path.parent / target.split("#")[0]).resolve()
        if "://" in target or not resolved.is_relative_to(root.resolve()) or not resolved.exists():
            bad.append(target)
    return bad


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    head = "\n".join(lines[:30])
    assert "bash .ci/setup.sh && .venv/bin/python app.py" in head
    assert "<!-- test command -->\n```bash\nbash .ci/setup.sh --test && .venv/bin/python -m pytest -q" in head


def test_every_document_exists_and_links_only_inside_the_repository():
    for path in DOCS:
        assert path.exists(), path
        assert bad_links(path) == [], path


def test_link_check_flags_outside_and_missing_targets(tmp_path):
    """Negative control: a repository of two files, linked every way."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "design.md").write_text("x")
    probe = tmp_path / "docs" / "probe.md"
    probe.write_text("[a](../../shared/DESIGN.md) [b](https://example.com) [c](missing.md) [d](design.md) "
                     "[e](../docs/design.md#x)")
    assert bad_links(probe, tmp_path) == ["../../shared/DESIGN.md", "https://example.com", "missing.md"]
