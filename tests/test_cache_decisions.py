"""Which block the cache keeps, evicts and packs where: exact, hand-worked lists.

The cache is driven block by block as the sampler drives it (begin, select, add, the
block leaving the recent window archived), with stand-in blocks and no model."""

import math

import pytest
import torch
from dense_reference import grid, one_thread, rotate  # noqa: F401  (fixture)

from packforcing.cache import BlockKV, CacheInvariantError, KVCache
from packforcing.config import PackForcingConfig

pytestmark = pytest.mark.usefixtures("one_thread")

FULL, SMALL = 64, 4  # tokens of a full-resolution and of a compressed block


def fifo_choice(cache):
    bank, k = list(cache.mid), cache.config.top_k
    return bank if cache.config.policy == "full" else bank[len(bank) - k:] if k else []


def drive(config, blocks, choose=fifo_choice):
    """Run `blocks` blocks through the cache; per block the state it saw and what its admission evicted."""
    cache = KVCache(config, num_layers=1, tokens_per_block=FULL, compressed_tokens=SMALL)
    seen = []
    for c in range(blocks):
        cache.begin_block(c, 4.0 * c)
        cache.set_selection(choose(cache))
        state = dict(sink=list(cache.sink), mid=list(cache.mid), selected=list(cache.selected),
                     recent=list(cache.recent))
        cache.add_block(BlockKV(c, 4.0 * c, FULL))
        leaving = cache.pop_overflow()
        if leaving is not None:
            state["left"] = leaving.index
            compressed = config.policy != "full"
            cache.archive(BlockKV(leaving.index, leaving.start_frame, SMALL if compressed else FULL,
                                  compressed=compressed))
        state["evicted"] = list(cache.evicted)
        seen.append(state)
    return cache, seen


def test_the_oldest_mid_block_is_evicted_and_the_bank_keeps_temporal_order():
    config = PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=3)
    cache, seen = drive(config, 9)
    # block c sees sink [0], recent [c-1] and the bank of blocks 1..c-2, at most the 3 newest
    assert [s["sink"] for s in seen] == [[]] + [[0]] * 8
    assert [s["recent"] for s in seen] == [[], [], [1], [2], [3], [4], [5], [6], [7]]
    assert [s["mid"] for s in seen] == [[], [], [], [1], [1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6]]
    assert [s.get("left") for s in seen] == [None, None, 1, 2, 3, 4, 5, 6, 7]
    assert [s["evicted"] for s in seen] == [[], [], [], [], [], [1], [2], [3], [4]]
    assert list(cache.mid) == [5, 6, 7] and list(cache.recent) == [8] and list(cache.sink) == [0]


def test_recent_window_of_two_and_a_two_block_sink():
    config = PackForcingConfig(sink_frames=8, recent_blocks=2, top_k=1, mid_capacity=2)
    _, seen = drive(config, 8)
    assert [s["sink"] for s in seen] == [[], [0]] + [[0, 1]] * 6
    assert [s["recent"] for s in seen] == [[], [], [], [2], [2, 3], [3, 4], [4, 5], [5, 6]]
    assert [s["mid"] for s in seen] == [[], [], [], [], [], [2], [2, 3], [3, 4]]
    assert [s["evicted"] for s in seen] == [[], [], [], [], [], [], [2], [3]]


@pytest.mark.parametrize("policy, bank_after_12", [
    ("dynamic", [7, 8, 9, 10]),  # mid_capacity 4
    ("random", [7, 8, 9, 10]),
    ("fifo", [9, 10]),  # top_k deep: older blocks could never be selected
    ("window", []),  # archives nothing
    ("full", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),  # keeps everything, whole
])
def test_bank_capacity_per_policy(policy, bank_after_12):
    config = PackForcingConfig(policy=policy, sink_frames=4, top_k=2, mid_capacity=4)
    cache, seen = drive(config, 12)
    assert list(cache.mid) == bank_after_12
    assert config.bank_capacity == {"dynamic": 4, "random": 4, "fifo": 2, "window": 0, "full": 4}[policy]
    assert all(b.tokens == (FULL if policy == "full" else SMALL) for b in cache.mid.values())
    evicted = sum((s["evicted"] for s in seen), [])
    assert evicted == ([] if policy in ("window", "full") else list(range(1, bank_after_12[0])))


def test_the_block_leaving_the_recent_window_is_its_oldest():
    config = PackForcingConfig(sink_frames=0, recent_blocks=3, policy="window")
    cache = KVCache(config, 1, FULL, SMALL)
    for c in range(3):
        cache.add_block(BlockKV(c, 4.0 * c, FULL))
        assert cache.pop_overflow() is None  # the window is not full yet
    cache.add_block(BlockKV(3, 12.0, FULL))
    assert cache.pop_overflow().index == 0 and list(cache.recent) == [1, 2, 3]


def packed_cache(selected, recent_blocks=1, rope_repair=True):
    """Sink [0, 1], bank [4, 5, 6, 7], recent [8] (or [7, 8]), current block 9 at frame 36."""
    config = PackForcingConfig(sink_frames=8, recent_blocks=recent_blocks, top_k=2, mid_capacity=4,
                               rope_repair=rope_repair)
    cache, _ = drive(config, 9)
    cache.begin_block(9, 36.0)
    cache.set_selection(selected)
    return cache


def test_packing_order_and_shifts_hand_worked():
    cache = packed_cache([6, 4])  # given out of order: attended in temporal order
    assert [b.index for b in cache.attended()] == [0, 1, 4, 6, 8]
    # recent 8 stays at 32 (the current block at 36); 6 and 4 pack into 28 and 24;
    # the sinks 1 and 0 into 20 and 16
    assert cache.shifts == {0: 16.0, 1: 16.0, 4: 8.0, 6: 4.0, 8: 0.0}
    cache = packed_cache([5, 7])
    assert cache.shifts == {0: 16.0, 1: 16.0, 5: 4.0, 7: 0.0, 8: 0.0}


def test_packing_with_two_recent_blocks_and_without_repair():
    cache = packed_cache([4, 5], recent_blocks=2)  # bank [3, 4, 5, 6], recent [7, 8]
    assert [b.index for b in cache.attended()] == [0, 1, 4, 5, 7, 8]
    assert cache.shifts == {0: 12.0, 1: 12.0, 4: 4.0, 5: 4.0, 7: 0.0, 8: 0.0}
    cache = packed_cache([4, 6], rope_repair=False)
    assert cache.shifts == {0: 0.0, 1: 0.0, 4: 0.0, 6: 0.0, 8: 0.0}


def test_context_concatenates_in_packed_order_and_rotates_by_the_shift():
    head_dim = 12
    cache = packed_cache([6, 4])
    g = torch.Generator().manual_seed(0)
    raw, positions = {}, {}
    for b in cache.attended():  # keys rotated at the block's own frames, values tagged by index
        raw[b.index] = torch.randn(1, b.tokens, 1, head_dim, generator=g)
        t, h, w = grid(4, 4, 4, t0=b.start_frame) if b.tokens == FULL else grid(2, 1, 2, t0=b.start_frame + 0.5,
                                                                                span=(2, 4, 4))
        b.keys, b.values = [rotate(raw[b.index], t, h, w)], [torch.full((1, b.tokens, 1, head_dim), float(b.index))]
        positions[b.index] = (t, h, w)
    keys, values = cache.context(0)
    order = [0, 1, 4, 6, 8]
    assert values[0, :, 0, 0].tolist() == sum(([float(i)] * cache.attended()[n].tokens for n, i in enumerate(order)),
                                              [])
    packed = {0: 16.0, 1: 20.0, 4: 24.0, 6: 28.0, 8: 32.0}
    expected = []
    for b in cache.attended():  # RoPE recomputed from scratch at the packed frame
        t, h, w = positions[b.index]
        expected.append(rotate(raw[b.index], t - b.start_frame + packed[b.index], h, w))
    expected = torch.cat(expected, dim=1)
    assert torch.allclose(keys, expected, atol=1e-5)
    assert not torch.allclose(keys, torch.cat([b.keys[0] for b in cache.attended()], dim=1), atol=1e-3)  # they moved


def test_proportional_bias_is_the_log_of_the_exact_ratio():
    # 64 full-resolution tokens summarised by 6: log(64 / 6) = log(10.67), not log(10)
    config = PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=3, proportional_attention=True)
    cache = KVCache(config, 1, FULL, 6)
    cache.mid[1] = BlockKV(1, 4.0, 6, compressed=True)
    cache.begin_block(3, 12.0)
    cache.set_selection([1])
    assert torch.allclose(cache.context_bias(), torch.full((6,), math.log(64 / 6)))


def test_token_accounting_hand_counted():
    cache = packed_cache([6, 4])
    # sink 2 x 64 + selected 2 x 4 + recent 64 + current 64
    assert cache.context_tokens() == 128 + 8 + 64 + 64 == 264
    assert cache.bounded_context_tokens() == 264
    assert cache.partition_tokens() == {"sink": 128, "mid_selected": 8, "mid_archived": 8, "recent": 64, "current": 64}


def test_dynamic_waits_for_its_scores_the_others_do_not():
    config = PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=3)
    cache, _ = drive(config, 4)
    cache.begin_block(4, 16.0)
    assert cache.selection_pending  # bank [1, 2] and no scores yet
    with pytest.raises(CacheInvariantError, match="block 4 attends before its selection"):
        cache.context(0)
    cache.set_selection([1, 2], {1: 0.5, 2: 0.25})
    assert not cache.selection_pending
    fifo, _ = drive(config.replace(policy="fifo"), 4)
    fifo.begin_block(4, 16.0)
    empty = KVCache(config, 1, FULL, SMALL)
    empty.begin_block(0, 0.0)
    assert not fifo.selection_pending and not empty.selection_pending


def test_invariants_name_the_bad_state():
    config = PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=3)
    cache, _ = drive(config, 6)  # bank [2, 3, 4]
    cache.begin_block(6, 24.0)
    with pytest.raises(CacheInvariantError, match=r"selected blocks \[9\] are not in the mid bank \[2, 3, 4\]"):
        cache.set_selection([2, 9])
    with pytest.raises(CacheInvariantError, match="3 mid blocks selected, top_k is 2"):
        cache.set_selection([2, 3, 4])
    cache.mid[7] = BlockKV(7, 28.0, SMALL, compressed=True)
    with pytest.raises(CacheInvariantError, match="mid bank holds 4 blocks, capacity is 3"):
        cache.check()
    over = KVCache(config, 1, FULL, SMALL)
    over.sink.update({0: BlockKV(0, 0.0, FULL), 1: BlockKV(1, 4.0, FULL)})
    with pytest.raises(CacheInvariantError, match="sink holds 2 blocks"):
        over.check()


def test_clear_empties_every_partition():
    cache, _ = drive(PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=3), 6)
    cache.begin_block(6, 24.0)
    cache.clear()
    assert (cache.sink, cache.mid, cache.recent, cache.current) == ({}, {}, {}, None)
