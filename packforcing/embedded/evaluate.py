"""The embedded model's evaluator: metrics of a generated world video from its pixels
(packforcing.embedded.metrics: faithfulness to the prompt, revisit consistency when the
camera comes back, drift over time) and one from its trace: how often a block attended
its revisit source."""

from __future__ import annotations

import statistics

from ..events import Block
from ..registry import Evaluator

PROMPTS = (
    "a red circle and a blue square, camera pans right",
    "a yellow triangle and a green circle, slow pan left",
    "a white square, a red triangle and a blue circle",
)
LABELS = {
    "faithfulness": "prompt faithfulness",
    "revisit_consistency": "revisit consistency",
    "revisit_contrast": "revisit contrast",
    "drift_drop": "drift (first − last loop)",
}
# metrics whose spread over the runs is reported next to the mean, so a reader can tell
# a difference between configurations from run-to-run noise
SPREAD = ("faithfulness", "revisit_consistency", "revisit_contrast", "pan_accuracy", "revisit_source_attended")


def revisit_source_attended(blocks: list[Block], loop_blocks: int) -> float | None:
    """Of the blocks whose revisit source (the block one camera loop back) sits in the
    mid bank, the fraction that attended it; None when no block had one. Read from the
    trace, not the pixels: it says whether the selection looked in the right place, so
    the pixel metrics can say whether the model made use of it. `random`'s rate is chance."""
    eligible = [b for b in blocks if b.block - loop_blocks in b.mid_bank]
    if not eligible:
        return None
    return statistics.mean(float(b.block - loop_blocks in b.mid_selected) for b in eligible)


def score(frames, blocks: list[Block], prompt: str, seed: int) -> dict:
    """Every metric of one video: frames (T, 64, 64, 3) uint8 and its Block events."""
    from .metrics import evaluate
    from .world import LOOP_FRAMES, spec_from_prompt

    scores = evaluate(frames, spec_from_prompt(prompt, seed))
    frames_per_block = blocks[0].frames_total or len(frames) // len(blocks)  # the first block's
    scores["revisit_source_attended"] = revisit_source_attended(blocks, LOOP_FRAMES // frames_per_block)
    return scores


def report(scores: dict) -> dict[str, str]:
    """The studio's comparison rows of one video's scores."""
    out = {label: "n/a (too short)" if scores.get(key) is None else f"{scores[key]:.3f}" for key,
           label in LABELS.items()}
    attended = scores.get("revisit_source_attended")
    shown = "n/a (no source in the mid bank)" if attended is None else f"{attended:.0%}"
    out["revisit source attended (block one loop back)"] = shown
    return out


EVALUATOR = Evaluator(score=score, prompts=PROMPTS, report=report, spread=SPREAD)
