"""The block memory's bookkeeping: what it keeps for each cached block (and for no other),
what a reset leaves, and the snapshot the trace's block event is built from."""

import dataclasses

import pytest
import torch

from packforcing.attention import SelectionHook
from packforcing.backbones.tiny import build_tiny_random
from packforcing.config import PackForcingConfig
from packforcing.decoding import Decoded
from packforcing.sampler import PackForcingSampler

# 2 sink blocks, 1 recent, a bank of 2: after 7 blocks the bank holds 4 and 5, 2 and 3 evicted
CONFIG = PackForcingConfig(top_k=1, mid_capacity=2, timesteps=(1000.0,))


@pytest.fixture(scope="module")
def filled():
    backbone = build_tiny_random(width=64, height=64)
    sampler = PackForcingSampler(backbone, CONFIG, seed=0)
    text = backbone.encode_prompt("a test prompt")
    with torch.no_grad():
        for c in range(7):
            sampler.begin_block(c)
            x0 = sampler.denoise_block(c, text)
            sampler.memory.admit(sampler.write_block(c, x0, text), x0, Decoded(pixels=backbone.codec.decode(x0)), text)
        sampler.begin_block(7)
        sampler.denoise_block(7, text)  # dynamic selection is scored in the first forward
        snapshot = sampler.memory.snapshot()
    return sampler.memory, snapshot


def test_kept_holds_the_cached_blocks_only_and_pixels_until_they_leave_the_window(filled):
    memory, _ = filled
    cache = memory.cache
    assert (list(cache.sink), list(cache.mid), list(cache.recent)) == ([0, 1], [4, 5], [6])
    assert sorted(memory.kept) == [0, 1, 4, 5, 6]  # the evicted 2 and 3 are gone
    assert all(memory.kept[i].pixels is None and memory.kept[i].lr is None for i in cache.sink)  # never compressed
    assert all(memory.kept[i].pixels is None and memory.kept[i].lr is not None for i in cache.mid)  # pixels -> LR input
    assert memory.kept[6].pixels is not None and memory.kept[6].lr is None


def test_the_snapshot_is_the_cache_as_the_block_sees_it_and_cannot_change(filled):
    memory, snapshot = filled
    assert (snapshot.block, snapshot.current, snapshot.sink, snapshot.mid_bank, snapshot.recent) == (
        7,
        7,
        [0, 1],
        [4, 5],
        [6],
    )
    assert len(snapshot.mid_selected) == 1 and snapshot.mid_selected[0] in (4, 5)
    assert sorted(snapshot.rope_shift) == sorted([0, 1, *snapshot.mid_selected, 6, 7]) and snapshot.rope_shift[7] == 0.0
    assert snapshot.positions == {0: 0.0, 1: 4.0, 4: 16.0, 5: 20.0, 6: 24.0, 7: 28.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.block = 0


def test_reset_empties_the_cache_the_kept_blocks_and_the_hook(filled):
    memory, _ = filled
    memory.session.set_hook(SelectionHook())
    memory.reset()
    assert memory.kept == {} and memory.session.hook is None
    assert memory.cache.kv_bytes() == 0 and not memory.cache.sink and not memory.cache.mid
