"""One block numbering everywhere: blocks count from 0, as in the trace. The status line,
the panels, the trace file, the narration and the switch marks all name a block by its
trace index (README: "Blocks are numbered from 0")."""

import json
import re

import pytest
from dense_reference import one_thread  # noqa: F401  (fixture)

from app.handlers import Run
from packforcing.config import PackForcingConfig
from packforcing.controls import LiveControls

pytestmark = pytest.mark.usefixtures("one_thread")


def test_status_panels_trace_and_narration_name_the_same_block(tmp_path):
    controls = LiveControls()
    run = Run("tiny-random", "a red circle", 3, 0, PackForcingConfig(top_k=2, mid_capacity=4), workdir=str(tmp_path),
              controls=controls, panel_seconds=0)
    shown, narration = [], None
    for update in run.updates():
        narration = update.get("narration", narration)  # told with the block's segment, before its panels
        if update.get("figures"):
            rope = update["figures"][2].layout.title.text
            shown.append((update["status"], rope, narration))
            controls.switch_prompt("a green square")  # taken before the next block
    with open(run.trace_path) as f:
        trace = [json.loads(line) for line in f]
    assert [e["block"] for e in trace if e["type"] == "block"] == [0, 1, 2]
    assert [e["block"] for e in trace if e["type"] == "switch"] == [1, 2]
    for index, (status, rope, narration) in enumerate(shown):
        assert re.match(rf"Block {index} · ", status), status
        assert f"block {index}:" in rope and re.search(rf"Block {index} (attended|holds)", narration), (rope, narration)
    status, rope, narration = shown[1]
    assert "prompt switched before block 1 (" in status and "switch before block 1:" in rope
    assert "before block 1 and re\\-cached" in narration  # plain(): shown as text
