"""The ablation lab: every configuration runs on the same prompt and seed, the KV bytes
each holds are exactly what its partitions hold, and the table reports means with their
standard errors. Bad arguments exit 2 naming the value."""

import math

import pytest

import packforcing.ablation as lab
from packforcing.cli import main
from packforcing.embedded.evaluate import EVALUATOR, revisit_source_attended
from packforcing.pipeline import PackForcingPipeline

MiB = 2**20


@pytest.fixture(scope="module")
def pipe():
    return PackForcingPipeline.from_name("embedded")


@pytest.fixture(scope="module")
def table(pipe):
    # 9 s = 9 blocks: one camera loop (8 s) plus a revisit, and a mid bank of 6 blocks.
    # One unguided step per block keeps it fast; the memory does not depend on the steps.
    base = pipe.default_config.replace(timesteps=(1000.0,), guidance_scale=1.0)
    return lab.ablate(pipe, 9, seeds=(0,), prompts=("a red circle and a blue square, camera pans right",), base=base,
                      evaluator=EVALUATOR)


def test_every_configuration_is_run(table):
    assert list(table) == ["window", "random", "fifo", "dynamic", "full", "dynamic, no sink", "dynamic, no RoPE repair"]
    for row in table.values():
        assert row["frames"] == 144 and row["loops"] == pytest.approx(144 / 128)
        for k in ("faithfulness", "revisit_consistency", "pan_accuracy"):
            assert 0.0 <= row[k] <= 1.0
            assert row[f"{k}_sem"] == 0.0  # one run: no spread
        assert row["video_seconds_per_second"] > 0


def test_kv_bytes_are_what_each_policy_holds(table):
    # embedded: 256 tokens per block, 4 layers x (K, V) x 128 x float32 = 4 KiB per token,
    # so a full-resolution block is 1 MiB and a compressed one (8 tokens) 32 KiB.
    # After 9 blocks: sink 0-1, recent 8, blocks 2-7 left the recent window.
    block, compressed = 1 * MiB, 32 * 1024
    expected_last = {
        "window": 3 * block,                        # sink + recent, the rest dropped
        "random": 3 * block + 6 * compressed,       # mid bank holds all six
        "fifo": 3 * block + 4 * compressed,         # FIFO archives only top_k blocks
        "dynamic": 3 * block + 6 * compressed,
        "full": 9 * block,                          # everything, uncompressed
        "dynamic, no sink": 1 * block + 8 * compressed,  # blocks 0-7 all compressed
        "dynamic, no RoPE repair": 3 * block + 6 * compressed,
    }
    assert {name: row["kv_bytes_last"] for name, row in table.items()} == expected_last
    # halfway (block 4): full has grown by 2 blocks since, dynamic only by 4 compressed blocks
    assert table["full"]["kv_bytes_first_full_bank"] == 5 * block
    assert table["dynamic"]["kv_bytes_first_full_bank"] == 3 * block + 2 * compressed


def test_table_reports_means_and_standard_errors(pipe, monkeypatch):
    rows = iter([
        {"faithfulness": 0.2, "revisit_consistency": 0.5, "kv_bytes_last": 10},
        {"faithfulness": 0.4, "kv_bytes_last": 10},  # too short for a revisit: key absent
    ] * len(lab.ablation_configs(pipe.default_config)))
    monkeypatch.setattr(lab, "run_one", lambda *a: next(rows))
    table = lab.ablate(pipe, 2, seeds=(0, 1), prompts=("a red circle",), evaluator=EVALUATOR)
    row = table["dynamic"]
    assert row["faithfulness"] == pytest.approx(0.3)
    assert row["faithfulness_sem"] == pytest.approx(math.sqrt(0.02) / math.sqrt(2))
    assert "revisit_consistency" not in row and "revisit_consistency_sem" not in row
    assert row["kv_bytes_last"] == 10 and "kv_bytes_last_sem" not in row


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "seeds=0 is out of range"),
    (["--seconds", "0"], "duration=0 s is out of range"),
])
def test_bad_input_exits_2_and_names_the_value(capsys, args, message):
    assert main(["ablate", "--model", "embedded", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_revisit_source_attended_counts_only_blocks_whose_source_is_in_the_bank():
    from packforcing.events import Block

    def block(i, bank, selected):
        return Block(block=i, sink=[0, 1], mid_bank=bank, mid_selected=selected, recent=[i - 1], current=i,
                     selection_scores={}, rope_shift={}, kv_bytes=0, full_cache_bytes=0, context_tokens=0, seconds=0.0)

    blocks = [
        block(9, [2, 3, 4, 5, 6, 7], [4, 5, 6, 7]),  # source 1 is a sink block: not counted
        block(10, [2, 3, 4, 5, 6, 7, 8], [2, 6, 7, 8]),  # source 2 attended
        block(11, [2, 3, 4, 5, 6, 7, 8, 9], [6, 7, 8, 9]),  # source 3 missed
        block(12, [2, 3, 5, 6, 7, 8, 9, 10], [3, 8, 9, 10]),  # source 4 evicted: not counted
    ]
    assert revisit_source_attended(blocks, 8) == 0.5
    assert revisit_source_attended(blocks[:1], 8) is None
    assert revisit_source_attended(blocks[1:2], 8) == 1.0 and revisit_source_attended(blocks[2:3], 8) == 0.0
