"""Lessons: the measured difference comes from the runs just made (hand-made events with
hand-computed numbers here), and a lesson runs both sides of its pair through the
ablation view's runner."""

from types import SimpleNamespace

import pytest
from dense_reference import one_thread  # noqa: F401  (fixture)

from app import lessons
from packforcing.events import Block, Switch
from visualizers.lessons import difference

pytestmark = pytest.mark.usefixtures("one_thread")


def block(index, mid_selected=(), sink=0, shift=0.0, kv=100 * 1024) -> Block:
    return Block(block=index, sink=[], mid_bank=list(mid_selected), mid_selected=list(mid_selected), recent=[],
                 current=index, selection_scores={}, rope_shift={index: shift}, kv_bytes=kv, full_cache_bytes=kv,
                 context_tokens=1, seconds=0.1, tokens={"sink": sink})


def test_each_measure_against_hand_computed_numbers():
    a = [block(5, [1, 2], sink=512, shift=8.0), block(6, [1], sink=512, shift=12.0, kv=300 * 1024)]
    b = [block(5, [3, 4], shift=0.0), block(6, [5], shift=0.0, kv=200 * 1024)]
    names = ("dynamic", "fifo")
    tail = "; the cache ended at 300 KB (dynamic) and 200 KB (fifo)."
    assert difference("sink", a, b, names) == "Measured: dynamic attended 512 sink tokens per block, fifo 0" + tail
    # reach: (5-1 + 5-2 + 6-1) / 3 = 4.0 and (5-3 + 5-4 + 6-5) / 3 = 1.3
    assert difference("reach", a, b, names) == ("Measured: the mid blocks dynamic attended lay 4.0 blocks back on "
                                                "average, fifo's 1.3" + tail)
    assert difference("rope", a, b, names) == ("Measured: dynamic moved keys by up to 10.0 latent frames per block "
                                               "on average, fifo by 0.0" + tail)
    switched = [a[0], Switch(block=6, prompt="x", recache="all", recached=[0, 1, 5], seconds=0.5), a[1]]
    kept = [b[0], Switch(block=6, prompt="x", recache="none", recached=[], seconds=0.01), b[1]]
    assert difference("recache", switched, kept, names) == ("Measured: dynamic re-cached 3 blocks in 0.50 s at the "
                                                            "switch, fifo 0 blocks in 0.01 s" + tail)
    assert difference("sink", a, [], names) == ""  # a side with no block: nothing measured


def test_the_explanation_quotes_the_evaluators_row_of_this_run():
    lesson = lessons.LESSONS[0]
    runs = [SimpleNamespace(events=[block(1, sink=256)]), SimpleNamespace(events=[block(1)])]
    lab = SimpleNamespace(runs=runs, names=(lesson.a, lesson.b), rows=[{lesson.row: "0.120"}, {lesson.row: "0.340"}])
    text = lessons.explain(lesson, lab)
    assert text.startswith("**The sink** (dynamic vs dynamic, no sink): Both sides")
    assert "dynamic attended 256 sink tokens per block, dynamic, no sink 0" in text.replace("\\", "")
    assert "Drift (first − last loop): 0.120 (dynamic) vs 0.340 (dynamic, no sink)." in text.replace("\\", "")
    assert "Measured" not in lessons.explain(lesson)  # before the pair ends: only what to watch


def test_a_lesson_runs_both_sides_and_ends_with_its_measured_difference():
    from app.callbacks import run_lesson

    updates = list(run_lesson("The sink", "tiny-random", "a red circle", 2, 0, SimpleNamespace(session_hash="lesson")))
    *_, status, table, preset_a, preset_b, text = updates[-1]
    assert (preset_a, preset_b) == ("dynamic", "dynamic, no sink") and "KV bytes at the end" in table
    assert "Measured: dynamic attended" in text.replace("\\", "") and "dynamic, no sink 0" in text.replace("\\", "")
    refused = list(run_lesson("A camera that comes back: dynamic vs window", "tiny-random", "a red circle", 2, 0, None))
    assert "is not one this model can run" in refused[-1][14]
