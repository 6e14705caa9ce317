"""Memory arithmetic away from the paper's round numbers, against hand counts.

At 128x128: 128 / 8 (VAE) = 16, / 2 (patch) = 8, so 64 tokens per latent frame, 256 per
4-frame block, and a compressed block is 2 x (16 // 8) x (16 // 8) = 8 tokens."""

import math
from types import SimpleNamespace

import pytest
import torch

from packforcing.compression import HRCompressor
from packforcing.config import PackForcingConfig
from packforcing.memory import (
    PAPER_FPS,
    PAPER_HEIGHT,
    PAPER_SECONDS,
    PAPER_WIDTH,
    compressed_tokens_per_block,
    kv_curve,
    latent_frames_for,
    memory_table,
)
from packforcing.sampler import blocks_for

BPT = 184_320  # bytes per token of Wan 1.3B: K and V, 30 layers, 1536 wide, bf16


@pytest.mark.parametrize("seconds, latent_frames, blocks", [
    (1.0, 4, 1), (1.1, 4, 1), (1.2, 5, 2), (2.2, 9, 3), (0.3, 1, 1), (10.0, 40, 10),
])
def test_latent_frames_round_and_blocks_round_up(seconds, latent_frames, blocks):
    # 16 FPS, 4 pixel frames per latent frame: 1.2 s = 19.2 frames = 4.8 -> 5 latent frames -> 2 blocks
    assert latent_frames_for(seconds, 16) == latent_frames
    table = memory_table(seconds, 128, 128)
    assert (table["latent_frames"], table["num_blocks"]) == (latent_frames, blocks)
    assert table["full_cache_tokens"] == 64 * latent_frames
    backbone = SimpleNamespace(fps=16, codec=SimpleNamespace(temporal_factor=4))
    assert blocks_for(seconds, backbone, PackForcingConfig()) == blocks


def test_a_sliver_of_a_second_is_still_one_block():
    backbone = SimpleNamespace(fps=16, codec=SimpleNamespace(temporal_factor=4))
    assert blocks_for(0.01, backbone, PackForcingConfig()) == 1  # 0.04 latent frames


def test_held_tokens_per_block_hand_counted():
    # sink 2 blocks, recent 1, top_k 2; dynamic's bank holds 3, fifo's top_k = 2
    config = PackForcingConfig(sink_frames=8, top_k=2, mid_capacity=3)
    rows = kv_curve(8.0, 128, 128, 16, config)
    sink_recent = [256, 512, 768, 768, 768, 768, 768, 768]  # the recent window exists from block 3 on
    by_hand = {
        "window": sink_recent,
        "fifo": [256, 512, 768, 776, 784, 784, 784, 784],
        "dynamic": [256, 512, 768, 776, 784, 792, 792, 792],
        "random": [256, 512, 768, 776, 784, 792, 792, 792],
        "full": [256, 512, 768, 1024, 1280, 1536, 1792, 2048],
    }
    for policy, tokens in by_hand.items():
        assert [r[policy] for r in rows] == [t * BPT for t in tokens], policy
    assert [r["video_seconds"] for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert [r["block"] for r in rows] == list(range(8))
    assert [r["video_seconds"]
            for r in kv_curve(2.0, 128, 128, 24, config)] == pytest.approx([16 / 24, 32 / 24, 48 / 24])
    table = memory_table(8.0, 128, 128, 16, config)
    assert table["packforcing_tokens"] == 792 and table["kv_bytes_by_policy"]["fifo"] == 784 * BPT


def test_no_sink_the_first_block_is_recent():
    config = PackForcingConfig(sink_frames=0, top_k=1, mid_capacity=1)
    rows = kv_curve(4.0, 128, 128, 16, config)
    assert [r["dynamic"] // BPT for r in rows] == [256, 264, 264, 264]
    assert [r["window"] // BPT for r in rows] == [256, 256, 256, 256]


def test_the_papers_geometry_is_the_default():
    assert (PAPER_WIDTH, PAPER_HEIGHT, PAPER_FPS, PAPER_SECONDS) == (832, 480, 16, 120.0)
    assert memory_table(PAPER_SECONDS)["num_blocks"] == 120  # 120 s x 16 FPS / 4 / 4


def test_bounded_context_formula_hand_counted_off_the_paper_geometry():
    # 640x352: latent 80 x 44 -> 40 x 22 = 880 tokens per latent frame; compressed
    # 2 x (44 // 8) x (80 // 8) = 100. Context: 8 sink frames + 16 x 100 + recent + current.
    table = memory_table(30, 640, 352)
    assert (table["tokens_per_latent_frame"], table["tokens_per_block"], table["compressed_tokens_per_block"]) == (880,
                                                                                                                   3520,
                                                                                                                   100)
    assert table["context_tokens"] == 8 * 880 + 16 * 100 + 3520 + 3520 == 15680
    assert all(type(table[k]) is int for k in ("tokens_per_latent_frame", "tokens_per_block", "context_tokens"))
    assert table["sink_tokens"] == 7040 and table["recent_tokens"] == 3520
    assert table["compression_ratio"] == 35.2
    with pytest.raises(ValueError, match="width=100 is not a multiple of 16"):  # the patch grid would floor it to 96
        memory_table(30, 100, 100)


@pytest.mark.parametrize("block_frames", [1, 2, 3, 4, 5, 6])
def test_compressed_count_is_what_the_hr_branch_outputs(block_frames):
    # by hand: block_frames // 2 x (height // 64) x (width // 64) (VAE 8, then 8 from the
    # three stride-2 convs); a 1-frame block gives none, as the sampler refuses to compress it
    config = PackForcingConfig(block_frames=block_frames, sink_frames=0)
    for width, height in [(832, 480), (128, 128), (100, 60), (200, 136)]:
        by_hand = (block_frames // 2) * (height // 64) * (width // 64)
        count = compressed_tokens_per_block(width, height, config)
        assert count == by_hand and type(count) is int, (width, height, count)
    if block_frames >= 2:  # and the convolutions themselves, on 200x136's 17 x 25 latent
        with torch.no_grad():
            out = HRCompressor(16, 8, (4, 4, 4, 4))(torch.zeros(1, 16, block_frames, 17, 25))
        assert math.prod(out.shape[2:]) == compressed_tokens_per_block(200, 136, config)


def test_memory_table_rejects_what_cannot_be_counted():
    for kwargs, word in [({"seconds": 0}, "seconds=0"),
                         ({"seconds": 1, "width": 8}, "width=8 is out of range; allowed 16 to"),
                         ({"seconds": 1, "fps": -1}, "fps=-1")]:
        with pytest.raises(ValueError, match=word):
            memory_table(**kwargs)
