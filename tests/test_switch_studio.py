"""The studio's prompt switch without a browser: the Switch button queues a checked prompt
for the session's streaming run, the run's status and panels show the switch, and the
Ablation view runs the same switch with re-cache on and off."""

from types import SimpleNamespace

import pytest
from dense_reference import one_thread  # noqa: F401  (fixture)

from app.handlers import AblationRun, Run, live_controls, switch_prompt
from packforcing.config import PackForcingConfig

SMALL = PackForcingConfig(top_k=2, mid_capacity=4)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_switch_button_queues_a_checked_prompt_for_the_sessions_run():
    request = SimpleNamespace(session_hash="switch-button")
    assert "nothing is streaming" in switch_prompt("tiny-random", "a green square",
                                                   SimpleNamespace(session_hash="no-run"))
    controls = live_controls("switch-button")
    assert "Error" in switch_prompt("tiny-random", "   ", request) and controls.poll() == (None, None)
    assert "next block" in switch_prompt("tiny-random", "a *green* square", request)
    assert controls.poll() == ("a *green* square", None)


def test_a_live_switch_shows_in_the_status_and_on_the_panels():
    controls = live_controls("live-switch")
    statuses, figures = [], None
    for update in Run("tiny-random", "a red circle", 3, 0, SMALL, controls=controls).updates():
        statuses.append(update["status"])
        if update.get("figures"):
            figures = update["figures"]
            controls.switch_prompt("a green square")  # after block 1: applies from block 2
    assert not any("prompt switched" in s for s in statuses[:2])
    assert "prompt switched before block 2 (re-cached 1 blocks in" in statuses[2]
    occupancy, _, _, memory = figures
    assert any(s.name == "switch" for s in occupancy.layout.shapes) and any(s.name == "switch"
                                                                            for s in memory.layout.shapes)


def test_ablation_compares_the_same_switch_with_and_without_recache():
    lab = AblationRun("tiny-random", "a red circle", 3, 0, "dynamic, re-cache all", "dynamic, no re-cache", switch_at=1,
                      switch_to="a green square")
    table = [c for *_, c in lab.updates() if c][-1]
    assert "| switch before block 2 | re-cached 1 blocks in" in table and "| no re-cache |" in table
    plain = AblationRun("tiny-random", "a red circle", 2, 0, "window", "dynamic")  # no switch asked: one prompt
    assert all(isinstance(run.prompt, str) for run in plain.runs)
