"""What dynamic selection scores, against a dense double sum computed here from the
first layer's own projections: pre-RoPE queries and keys, every `query_stride`-th query
of the current block (first denoising pass) and of the recent block (its write pass),
the first half of the heads, once per block; ties go to the newer block."""

import math

import pytest
import torch
from dense_reference import brute_force_scores, fold_backbone, one_thread, top_k_newest_wins  # noqa: F401  (fixture)

import packforcing.attention as attention
from packforcing.attention import SelectionHook
from packforcing.config import PackForcingConfig
from packforcing.decoding import Decoded
from packforcing.events import Block
from packforcing.sampler import PackForcingSampler
from packforcing.selection import factorised_scores, include_required, score_matrix, select_blocks

pytestmark = pytest.mark.usefixtures("one_thread")

STRIDE, HEADS = 3, 4


@pytest.fixture(scope="module")
def stream():
    """Eight blocks of `dynamic` on the tiny model; every layer-0 self-attention input recorded."""
    backbone = fold_backbone(64, 64, heads=HEADS)
    sampler = PackForcingSampler(backbone,
                                 PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=3, query_stride=STRIDE), seed=0)
    attn = backbone.transformer.blocks[0].attn1
    log, selections = [], []

    def record(module, args):
        s = sampler.memory.session
        block = s.pending.index if s.pending is not None else sampler.memory.cache.current
        log.append((s.mode, block, args[0].detach().clone(), args[3]))

    def counting(*args, **kwargs):
        selections.append(sampler.memory.cache.current)
        return select_blocks(*args, **kwargs)

    handle = attn.register_forward_pre_hook(record)
    original, attention.select_blocks = attention.select_blocks, counting
    try:
        events = [e for e in sampler.stream("a red ball rolls", 8, "fold") if isinstance(e, Block)]
    finally:
        handle.remove()
        attention.select_blocks = original
    return attn, log, selections, events, sampler


def projections(attn, hidden, rotary=None):
    """Layer 0's queries and keys (B, S, H, D), by the layer's own modules; rotated by Wan's
    processor arithmetic when `rotary` is given (a negative control)."""
    q = attn.norm_q(attn.to_q(hidden)).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(attn.to_k(hidden)).unflatten(2, (attn.heads, -1))
    if rotary is not None:
        cos, sin = rotary
        def rot(x):
            x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
            return torch.stack([x1 * cos[..., 0::2] - x2 * sin[..., 1::2], x1 * sin[..., 1::2] + x2 * cos[..., 0::2]],
                               -1).flatten(-2)
        q, k = rot(q), rot(k)
    return q, k


def passes(log, mode, block):
    return [(hidden, rotary) for m, b, hidden, rotary in log if m == mode and b == block]


def reference_scores(attn, log, event, stride=STRIDE, recent=True, denoise_pass=0, rope_current=False,
                     rope_recent=False,
                     rope_k=False, scored=HEADS // 2):
    with torch.no_grad():
        hidden, rotary = passes(log, "denoise", event.block)[denoise_pass]
        queries = [projections(attn, hidden, rotary if rope_current else None)[0][:, ::stride]]
        if recent:
            for r in event.recent:
                hidden, rotary = passes(log, "write", r)[0]
                queries.append(projections(attn, hidden, rotary if rope_recent else None)[0][:, ::stride])
        keys = {}
        for m in event.mid_bank:
            hidden, rotary = passes(log, "compressed", m)[0]
            keys[m] = projections(attn, hidden, rotary if rope_k else None)[1]
    return brute_force_scores(torch.cat(queries, dim=1), keys, scored)


def close(a, b, rel=1e-4):
    return a.keys() == b.keys() and all(abs(a[m] - b[m]) <= rel * max(1.0, abs(b[m])) for m in a)


def test_scores_are_the_dense_double_sum_of_pre_rope_first_layer_projections(stream):
    attn, log, _, events, _ = stream
    scored = [e for e in events if e.mid_bank]
    assert [e.block for e in scored] == [3, 4, 5, 6, 7] and [e.mid_bank for e in scored][-1] == [3, 4, 5]
    for e in scored:
        expected = reference_scores(attn, log, e)
        assert close(e.selection_scores, expected), (e.block, e.selection_scores, expected)
        assert e.mid_selected == top_k_newest_wins(expected, 2)


@pytest.mark.parametrize("mistake", [
    dict(rope_current=True), dict(rope_recent=True), dict(rope_k=True), dict(stride=1), dict(recent=False),
    dict(denoise_pass=1), dict(scored=HEADS),
])
def test_each_wrong_reading_of_the_score_gives_other_numbers(stream, mistake):
    # negative controls: the test above would notice each of these mistakes
    attn, log, _, events, _ = stream
    e = events[-1]
    wrong = reference_scores(attn, log, e, **mistake)
    assert not close(e.selection_scores, wrong, rel=1e-2)


def test_scored_once_per_block_not_at_every_denoising_pass(stream):
    _, _, selections, events, _ = stream
    assert selections == [e.block for e in events if e.mid_bank]  # one selection per block that has a bank


def test_training_hook_gets_the_scored_query_and_its_required_blocks():
    # block 1 must be attended while the bank holds it (blocks 3-5; unhooked, the scores
    # pick [1], [2], [2], [2] at blocks 3-6); block 99 never exists and is ignored
    backbone = fold_backbone(64, 64, heads=HEADS)
    sampler = PackForcingSampler(backbone,
                                 PackForcingConfig(sink_frames=4, top_k=1, mid_capacity=3, query_stride=STRIDE), seed=0)
    attn, log = backbone.transformer.blocks[0].attn1, []
    handle = attn.register_forward_pre_hook(lambda m,
                                            args: log.append((sampler.memory.session.mode, sampler.memory.cache.current,
                                                              args[0].detach().clone(), None)))
    text, selected = backbone.encode_prompt("a red ball rolls"), []
    try:
        with torch.no_grad():
            for c in range(7):  # the public block loop, as training drives it
                hook = SelectionHook(required=[1, 99])
                sampler.begin_block(c, hook=hook)
                x0 = sampler.denoise_block(c, text)
                selected.append(list(sampler.memory.cache.selected))
                recent = list(sampler.memory.cache.recent)
                sampler.memory.admit(sampler.write_block(c, x0, text), x0, Decoded(pixels=backbone.codec.decode(x0)),
                                     text)
                if c >= 3:  # the query sum it was scored with: this block's first pass and the recent block's write
                    current = projections(attn, passes(log, "denoise", c)[0][0])[0][:, ::STRIDE].sum(1)
                    written = sum(projections(attn, h)[0][:, ::STRIDE].sum(1) for m, b, h,
                                  _ in log if m == "write" and b in recent)
                    assert torch.allclose(hook.query_sum, current + written, atol=1e-5), c
                else:
                    assert hook.query_sum is None  # nothing to score yet
    finally:
        handle.remove()
    assert selected == [[], [], [], [1], [1], [1], [2]]


def test_scored_heads_and_scale_hand_worked():
    # head h of block 0 contributes h + 1, of block 1 contributes 10 (h + 1); d = 4 -> / 2
    query = torch.tensor([[1.0, 0, 0, 0]]).expand(4, 4)[None]
    keys = [torch.tensor([[h + 1.0, 0, 0, 0] for h in range(4)])[None] * s for s in (1, 10)]
    for fraction, heads in [(0.5, 2), (0.3, 1), (0.4, 2), (0.1, 1), (0.9, 4), (1.0, 4)]:
        mean = sum(range(1, heads + 1)) / heads
        assert score_matrix(query, keys, 4, fraction).tolist() == [[mean / 2, 10 * mean / 2]], fraction


def test_factorised_scores_average_the_batch():
    query = torch.ones(2, 1, 4)
    key_sums = {3: torch.tensor([[[1.0, 1, 1, 1]], [[3.0, 3, 3, 3]]])}  # clip 0: 4, clip 1: 12
    assert factorised_scores(query, key_sums, 4, 1.0) == {3: (4 / 2 + 12 / 2) / 2}


def test_flat_scores_degrade_to_fifo_newest_wins():
    config = PackForcingConfig(top_k=2, mid_capacity=6)
    bank = [2, 3, 5, 8, 9]
    assert select_blocks(bank, config, {m: 1.0 for m in bank}) == [8, 9]
    assert select_blocks(bank, config, {2: 3.0, 3: 1.0, 5: 1.0, 8: 0.0, 9: 0.5}) == [2, 5]  # 5 beats 3
    assert select_blocks(bank, config, {2: 3.0, 3: 0.2, 5: 0.0, 8: 0.5, 9: 0.5}) == [2, 9]
    assert select_blocks(bank, config, {2: 0.0, 3: 9.0, 5: 8.0, 8: 0.0, 9: 0.0}) == [3,
                                                                                     5]  # not FIFO when scores differ
    assert include_required([8, 9], [2], {m: 1.0 for m in bank}, 2) == [2, 9]  # the newer of the tied survives


def test_fifo_takes_the_k_newest_and_random_stays_in_the_bank():
    bank = [1, 4, 6, 7, 9, 12]
    assert select_blocks(bank, PackForcingConfig(policy="fifo", top_k=3)) == [7, 9, 12]
    assert select_blocks(bank[:2], PackForcingConfig(policy="fifo", top_k=3)) == [1, 4]
    assert select_blocks(bank, PackForcingConfig(top_k=0, mid_capacity=6), {}) == []
    cfg = PackForcingConfig(policy="random", top_k=6, mid_capacity=6)
    assert select_blocks(bank, cfg, generator=torch.Generator().manual_seed(0)) == bank  # k >= bank: all of it
    with pytest.raises(ValueError, match=r"missing scores for mid blocks \[7\]"):
        select_blocks(bank, PackForcingConfig(top_k=2, mid_capacity=6), {m: 0.0 for m in bank if m != 7})


def test_brute_force_reference_is_the_literal_double_sum():
    # the reference itself, against a loop over every (query, key) pair of one head
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(1, 3, 2, 4, generator=g), torch.randn(1, 5, 2, 4, generator=g)
    literal = sum(float(q[0, i, 0].double() @ k[0, j, 0].double()) for i in range(3) for j in range(5)) / math.sqrt(4)
    assert abs(brute_force_scores(q, {0: k}, scored_heads=1)[0] - literal) < 1e-9
