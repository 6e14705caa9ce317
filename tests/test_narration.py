"""The narration of a block: hand-made events, hand-written sentences. What did not happen
is never told (no eviction, no switch, no camera), and user text stays plain text."""

from packforcing.events import Block, RunStart, Switch
from visualizers.narration import narrate, narration_at

RUN = RunStart(prompt="a red circle", seed=0, model="m", num_blocks=20,
               config={"policy": "dynamic", "mid_capacity": 4, "rope_repair": True},
               geometry={"bounded_context_tokens": 1040})


def block(**fields) -> Block:
    base = dict(block=10, sink=[0, 1], mid_bank=[5, 6, 7, 8], mid_selected=[6, 7], recent=[9], current=10,
                selection_scores={}, rope_shift={0: 20.0, 1: 20.0, 6: 4.0, 7: 4.0, 9: 0.0, 10: 0.0},
                kv_bytes=300 * 1024, full_cache_bytes=1200 * 1024, context_tokens=1040, seconds=0.3, evicted=[5])
    return Block(**{**base, **fields})


def test_an_eviction_and_a_selection_in_three_sentences():
    assert narrate(block(), RUN) == (
        "After block 10, mid block 5, the oldest, left the cache to make room (the mid bank holds at most 4). "
        "Block 10 attended mid blocks 6 and 7 of the 4 it holds, the ones its queries scored highest. "
        "RoPE repair moved keys by up to 20 latent frames to close the gaps; 1,040 tokens were attended, within the "
        "bound of 1,040 that holds however long the video runs; the cache holds 300 KB, 25% of the 1,200 KB a full "
        "cache would hold by now.")


def test_no_eviction_is_never_narrated():
    text = narrate(block(evicted=[]), RUN)
    assert text.startswith("Block 10 attended mid blocks 6 and 7 of the 4 it holds") and "left the cache" not in text
    assert "switched" not in text and "filmed" not in text


def test_an_eviction_that_is_not_the_oldest_is_not_called_so():
    assert "mid block 7 left the cache" in narrate(block(evicted=[7]), RUN)


def test_a_switch_names_what_it_recached_and_a_switch_without_recache_says_so():
    switch = Switch(block=10, prompt="a <b>green</b> square", recache="sink+recent", recached=[0, 1, 9], seconds=0.25)
    assert narrate(block(evicted=[]), RUN, switch).startswith(
        'The prompt switched to "a <b>green</b> square" before block 10 and re-cached blocks 0, 1 and 9 under it '
        'in 0.25 s. ')
    kept = Switch(block=10, prompt="x" * 200, recache="none", recached=[], seconds=0.0)
    first = narrate(block(evicted=[]), RUN, kept).split(". ")[0]
    assert first == (f'The prompt switched to "{"x" * 59}…" before block 10 and kept the cache as it was '
                     '(no re-cache: the old prompt\'s keys stay)')


def test_the_first_block_and_a_run_without_repair_or_bound():
    first = block(block=0, current=0, sink=[], mid_bank=[], mid_selected=[], recent=[], rope_shift={0: 0.0}, evicted=[],
                  kv_bytes=96 * 1024, full_cache_bytes=96 * 1024, context_tokens=256)
    assert narrate(first, RUN) == (
        "Block 0 holds no mid block yet: blocks enter the compressed mid bank once they leave the recent window. "
        "No key needed moving (no gap to close); 256 tokens were attended, within the bound of 1,040 that holds "
        "however long the video runs; the cache holds 96 KB, 100% of the 96 KB a full cache would hold by now.")
    full = RunStart(**{**RUN.__dict__, "config": {"policy": "full", "rope_repair": False}})
    text = narrate(block(mid_selected=[5, 6, 7, 8], evicted=[]), full)
    assert text.startswith("Block 10 attended all mid blocks 5, 6, 7 and 8 it holds. "
                           "RoPE repair is off, so attended keys keep the gaps")
    assert "all of the history (a full cache has no bound)" in text


def test_the_block_that_filmed_this_place_is_named_only_with_a_camera():
    here = {"direction": "right", "x": 100.0, "end": 104.0, "period": 256.0, "view": 32.0}
    filmed = {6: {**here, "x": 98.0}, 7: {**here, "x": 40.0}}
    assert narrate(block(evicted=[], camera=here), RUN, filmed=filmed).split(". ")[0].endswith(
        "the ones its queries scored highest, among them block 6, which filmed this place")
    missed = narrate(block(evicted=[], mid_selected=[7, 8], camera=here), RUN, filmed=filmed)
    assert "; block 6, which filmed this place, is not among them." in missed
    assert "filmed" not in narrate(block(evicted=[]), RUN, filmed=filmed)  # no camera on this block: nothing said


def test_narration_at_picks_the_block_and_its_own_switch():
    switch = Switch(block=11, prompt="a green square", recache="all", recached=[9], seconds=0.1)
    events = [RUN, block(evicted=[]), switch, block(block=11, current=11, evicted=[])]
    assert narration_at(events, 10).startswith("Block 10 attended") and "switched" not in narration_at(events, 10)
    assert narration_at(events).startswith('The prompt switched to "a green square" before block 11')
    assert narration_at([RUN]) == ""
