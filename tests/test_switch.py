"""Prompt switches on the tiny model: where the switch lands, what it re-writes, and that
re-cache=all leaves the cache as if the new prompt had written it from the start.

The reference run (`written_under`) is built from the sampler's block steps, not from
its re-cache: the same latents as the run, each block's K/V written under the new prompt.
"""

import pytest
import torch
from dense_reference import one_thread  # noqa: F401  (fixture)

from packforcing.backbones.tiny import build_tiny_random
from packforcing.config import PackForcingConfig
from packforcing.controls import LiveControls
from packforcing.decoding import Decoded
from packforcing.events import Block, Frames, Switch
from packforcing.pipeline import PackForcingPipeline
from packforcing.sampler import PackForcingSampler
from packforcing.selection import select_blocks, selection_change
from packforcing.switching import schedule_blocks
from packforcing.video import to_uint8

A, B = "a red circle", "a green square"
# 1 s per block on the tiny model; hr+lr: a re-compressed mid block uses both branches
CFG = PackForcingConfig(top_k=2, mid_capacity=4, compression="hr+lr")
S, N = 6, 8  # switch before block 6: sink [0, 1], mid [2, 3, 4], recent [5], nothing evicted
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbone():
    return build_tiny_random(width=64, height=64, vae_kwargs=dict(base_dim=2))  # a narrower VAE decodes faster


def text(backbone, prompt):
    return backbone.encode_prompt(prompt).to(backbone.device, backbone.dtype)


def kv(cache) -> dict[int, list[torch.Tensor]]:
    return {b.index: [t.clone() for t in b.keys + b.values] for part in (cache.sink, cache.mid, cache.recent)
            for b in part.values()}


def same(x: list[torch.Tensor], y: list[torch.Tensor]) -> bool:
    return len(x) == len(y) and all(torch.equal(a, b) for a, b in zip(x, y))


_runs = {}


def switched_run(backbone, mode, switch=S, n=N):
    """(events, the cache's K/V right after the switch) of a run switching A -> B; runs
    are shared between tests (the model is deterministic)."""
    if (mode, switch, n) not in _runs:
        sampler = PackForcingSampler(backbone, CFG.replace(recache=mode), seed=0)
        events, at_switch = [], None
        for event in sampler.stream(A, n, "tiny-random", switches={switch: B}):
            if isinstance(event, Switch):
                at_switch = kv(sampler.memory.cache)
            events.append(event)
        _runs[mode, switch, n] = events, at_switch
    return _runs[mode, switch, n]


@pytest.fixture(scope="module")
def under_a(backbone):
    """Blocks < S made and written under A: (their latents, the cache's K/V, the sampler)."""
    sampler = PackForcingSampler(backbone, CFG, seed=0)
    ta, latents = text(backbone, A), []
    decoder = backbone.codec.stream_decoder()
    with torch.no_grad():
        for i in range(S):
            sampler.begin_block(i)
            latents.append(sampler.denoise_block(i, ta))
            sampler.memory.admit(sampler.write_block(i, latents[-1], ta), latents[-1],
                                 Decoded(pixels=decoder.decode_next(latents[-1])), ta)
    return latents, kv(sampler.memory.cache), sampler


@pytest.fixture(scope="module")
def written_under_b(backbone, under_a):
    """The reference: blocks < S keep the run's latents (made under A), but every block's
    K/V is written under B, from the start: (frames per block, the cache before block S)."""
    latents = under_a[0]
    sampler = PackForcingSampler(backbone, CFG, seed=0)
    ta, tb = text(backbone, A), text(backbone, B)
    decoder = backbone.codec.stream_decoder()
    frames, before = [], None
    with torch.no_grad():
        for i in range(N):
            if i == S:
                before = kv(sampler.memory.cache)
            sampler.begin_block(i)
            x0 = sampler.denoise_block(i, ta if i < S else tb)  # draws the same noise, scores the same selection
            if i < S:
                x0 = latents[i]
            pixels = decoder.decode_next(x0)
            frames.append(to_uint8(pixels))
            sampler.memory.admit(sampler.write_block(i, x0, tb), x0, Decoded(pixels=pixels), tb)
    return frames, before


def frames_of(events):
    return {e.block: e.frames for e in events if isinstance(e, Frames)}


def test_switch_times_fall_on_the_next_block_boundary():
    first, switches = schedule_blocks([(0, A), (5.5, B), (7, "a blue circle")], seconds=10, seconds_per_block=1.0,
                                      num_blocks=10)
    assert (first, switches) == (A, {6: B, 7: "a blue circle"})


def test_switch_event_lands_before_its_block_and_blocks_carry_the_prompt(backbone):
    events, _ = switched_run(backbone, "all")
    (switch,) = [e for e in events if isinstance(e, Switch)]
    at = events.index(switch)
    assert switch.block == S and switch.prompt == B
    assert isinstance(events[at - 1], Block) and events[at - 1].block == S - 1
    assert isinstance(events[at + 1], Frames) and events[at + 1].block == S
    assert [e.prompt for e in events if isinstance(e, Block)] == [A] * S + [B] * (N - S)


def test_live_switch_applies_from_the_next_block(backbone):
    controls, seen = LiveControls(), []
    for event in PackForcingSampler(backbone, CFG, seed=0).stream(A, 4, "tiny-random", controls=controls):
        seen.append(event)
        if isinstance(event, Block) and event.block == 1:
            controls.switch_prompt(B)
    assert [(s.block, s.prompt, s.recached) for s in seen if isinstance(s, Switch)] == [(2, B, [0, 1])]
    assert [e.prompt for e in seen if isinstance(e, Block)] == [A, A, B, B]


@pytest.mark.parametrize("mode, switch, n, expected", [
    ("none", S, N, []),
    ("recent", S, S + 1, [5]),
    ("sink+recent", S, N, [0, 1, 5]),
    ("all", S, N, [0, 1, 2, 3, 4, 5]),
    ("all", 9, 10, [0, 1, 4, 5, 6, 7, 8]),  # blocks 2 and 3 were evicted from the bank of 4
])
def test_recached_lists_exactly_the_partitions_asked_for(backbone, mode, switch, n, expected):
    events, _ = switched_run(backbone, mode, switch, n)
    (event,) = [e for e in events if isinstance(e, Switch)]
    assert (event.block, event.recache, event.recached) == (switch, mode, expected)
    assert event.seconds >= 0


def test_recache_all_equals_a_cache_written_under_the_new_prompt(backbone, under_a, written_under_b):
    ref_frames, ref_cache = written_under_b
    events, cache = switched_run(backbone, "all")
    assert sorted(cache) == sorted(ref_cache) == [0, 1, 2, 3, 4, 5]
    for index in cache:  # every layer's K and V: sink, compressed mid and recent
        assert same(cache[index], ref_cache[index]), index
    frames = frames_of(events)
    for i in range(N):
        assert (frames[i] == ref_frames[i]).all(), i
    # the reference really differs from the cache it replaces (written under A)
    assert not any(same(under_a[1][i], ref_cache[i]) for i in ref_cache)


def test_no_recache_keeps_the_old_cache_and_differs_after_the_switch(backbone, under_a, written_under_b):
    ref_frames, _ = written_under_b
    events, cache = switched_run(backbone, "none")
    for index in cache:
        assert same(cache[index], under_a[1][index]), index
    frames = frames_of(events)
    assert all((frames[i] == ref_frames[i]).all() for i in range(S))
    assert all((frames[i] != ref_frames[i]).any() for i in range(S, N))


def test_sink_and_recent_recache_is_a_fresh_write_under_the_new_prompt(backbone, under_a, written_under_b):
    latents, old, sampler = under_a
    _, ref_cache = written_under_b
    events, cache = switched_run(backbone, "sink+recent")
    for index in (0, 1):  # a sink block attends only the sink before it: exactly the reference's
        assert same(cache[index], ref_cache[index]), index
    for index in (2, 3, 4):  # the mid bank is not re-written
        assert same(cache[index], old[index]), index
    # block 5 written afresh under B, attending what it attended when generated (the sink,
    # now re-written, and the mid blocks it selected): the old cache with the new sink
    seen = next(e for e in events if isinstance(e, Block) and e.block == 5)
    c = sampler.memory.cache
    c.recent.pop(5)
    for index in (0, 1):
        c.sink[index].keys, c.sink[index].values = cache[index][:2], cache[index][2:]
    c.begin_block(5, 20.0)
    c.set_selection(seen.mid_selected, seen.selection_scores)
    with torch.no_grad():
        fresh = sampler.write_block(5, latents[5], text(backbone, B))
    assert same(cache[5], fresh.keys + fresh.values)
    assert not same(cache[5], old[5])


def test_bad_schedules_and_options_name_the_value(backbone):
    pipe = PackForcingPipeline(backbone)
    for schedule, message in [
        ([(0, A), (12, B)], "switch at 12 s is past the end of the 10-s video"),
        ([(0, A), (6, B), (4, "a blue circle")], "switch at 4 s comes after one at 6 s"),
        ([(0, A), (6, "  ")], "the prompt at 6 s"),
        ([(2, A)], "starts at 2 s"),
        ([(0, A), (6.2, B), (6.7, "a blue circle")], "same block boundary"),
        ([], "schedule is empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            list(pipe.stream(schedule, seconds=10, config=CFG))
    with pytest.raises(ValueError,
                       match="recache='some' is not allowed; choose one of none, recent, sink\\+recent, all"):
        CFG.replace(recache="some")
    with pytest.raises(ValueError, match="selection_hysteresis=-0.1"):
        CFG.replace(selection_hysteresis=-0.1)


def test_hysteresis_keeps_a_selected_block_until_beaten_by_the_margin():
    bank, scores, previous = [2, 3, 4, 5], {2: 1.0, 3: 0.9, 4: 0.5, 5: 0.0}, [3, 4]
    pick = lambda h: select_blocks(bank, PackForcingConfig(top_k=2, selection_hysteresis=h), scores,
                                   previous=previous)  # noqa: E731
    assert pick(0.0) == [2, 3]  # off: the plain top-k
    assert pick(0.4) == [2, 3]  # 2 beats 4 by 0.5 of a range of 1.0, more than the margin 0.4
    assert pick(0.6) == [3, 4]  # ... less than 0.6: 4 stays
    assert selection_change([3, 4], [2, 3]) == 0.5 and selection_change([], [2]) is None
    assert selection_change([2], [2]) == 0.0
    assert selection_change([2], [2, 3, 4, 5]) == 0.75  # 3 of the 4 selected are new (the bank grew)


def test_selection_change_in_the_trace_and_hysteresis_lowers_it(backbone):
    def changes(h):
        events = PackForcingSampler(backbone, CFG.replace(selection_hysteresis=h), seed=0).stream(A, 10, "tiny-random")
        blocks = [e for e in events if isinstance(e, Block)]
        for before, after in zip(blocks, blocks[1:]):
            expected = None
            if before.mid_selected and after.mid_selected:
                expected = len(set(after.mid_selected) - set(before.mid_selected)) / len(after.mid_selected)
            assert after.selection_change == expected
        return sum(b.selection_change or 0.0 for b in blocks)

    assert changes(1.0) < changes(0.0)
