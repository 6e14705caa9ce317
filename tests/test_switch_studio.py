"""The studio's prompt switch without a browser: the Switch button queues a prompt checked
against the session's running model, the run's status and panels show the switch, and
the Ablation view runs the same switch with re-cache on and off."""

from types import SimpleNamespace

import pytest
from dense_reference import one_thread  # noqa: F401  (fixture)

from app import sessions
from app.handlers import AblationRun, Run
from app.live import Live, switch_prompt
from packforcing.config import PackForcingConfig
from packforcing.controls import LiveControls

SMALL = PackForcingConfig(top_k=2, mid_capacity=4)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_switch_button_queues_a_prompt_checked_by_the_running_model(monkeypatch):
    def strict(prompt):  # the running model's own check (the embedded model names words it does not know)
        if not prompt.strip() or "<" in prompt:
            raise ValueError(f"prompt {prompt[:20]!r} has no known word")

    import packforcing.pipeline
    monkeypatch.setattr(packforcing.pipeline.PackForcingPipeline, "from_name", None)  # a switch never loads a model
    request = SimpleNamespace(session_hash="switch-button")
    assert "nothing is streaming" in switch_prompt("a green square", SimpleNamespace(session_hash="no-run"))
    live = Live(LiveControls(), SimpleNamespace(validate_prompt=strict, name="strict", has_camera=False))
    sessions.hold_live("switch-button", live)
    assert "has no known word" in switch_prompt("<img src=x onerror=alert(1)>", request)
    assert live.controls.poll() == (None, None)
    assert "next block" in switch_prompt("a *green* square", request)
    assert live.controls.poll() == ("a *green* square", None)
    sessions.release_live("switch-button", live)
    assert "nothing is streaming" in switch_prompt("a green square", request)


def test_a_live_switch_shows_in_the_status_and_on_the_panels():
    controls = LiveControls()
    statuses, figures = [], None
    for update in Run("tiny-random", "a red circle", 3, 0, SMALL, controls=controls).updates():
        statuses.append(update["status"])
        if update.get("figures"):
            figures = update["figures"]
            controls.switch_prompt("a green square")  # after block 0: applies from block 1
    block = {s.split(" · ")[0]: s for s in statuses if s.startswith("Block ")}  # each block's status
    assert "prompt switched" not in block["Block 0"]
    assert "prompt switched before block 1 (re-cached 1 blocks in" in block["Block 1"]
    occupancy, _, _, memory = figures
    assert any(s.name == "switch" for s in occupancy.layout.shapes)
    assert any(s.name == "switch" for s in memory.layout.shapes)


def test_ablation_compares_the_same_switch_with_and_without_recache():
    lab = AblationRun("tiny-random", "a red circle", 3, 0, "dynamic, re-cache all", "dynamic, no re-cache",
                      switch_at=1, switch_to="a green square")
    table = [c for *_, c in lab.updates() if c][-1]
    assert "| switch before block 1 | re-cached 1 blocks in" in table and "| no re-cache |" in table
    plain = AblationRun("tiny-random", "a red circle", 2, 0, "window", "dynamic")  # no switch asked: one prompt
    assert all(isinstance(run.prompt, str) for run in plain.runs)
