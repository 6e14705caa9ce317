import torch
from dense_reference import brute_force_scores
from helpers import shift_keys_in_time

from packforcing.config import PackForcingConfig
from packforcing.rope import apply_rotary, grid_positions, rope_cos_sin, rope_split
from packforcing.selection import factorised_scores, include_required, score_matrix, select_blocks

HEAD_DIM = 128


def keys_at(raw, frame0):
    t, h, w = grid_positions(2, 3, 4, t0=frame0)
    return apply_rotary(raw, *rope_cos_sin(t, h, w, HEAD_DIM))


def test_split_matches_wan():
    assert rope_split(128) == (44, 42, 42)


def test_shift_equals_recomputing_at_new_position():
    raw = torch.randn(1, 24, 2, HEAD_DIM)
    moved = shift_keys_in_time(keys_at(raw, 5.0), 17.0)
    assert torch.allclose(moved, keys_at(raw, 22.0), atol=2e-5)
    # negative control: the wrong shift does not land there
    assert not torch.allclose(shift_keys_in_time(keys_at(raw, 5.0), 16.0), keys_at(raw, 22.0), atol=1e-3)


def test_shift_leaves_spatial_pairs_untouched():
    k = keys_at(torch.randn(1, 24, 2, HEAD_DIM), 3.0)
    moved = shift_keys_in_time(k, 9.0)
    assert torch.equal(moved[..., 44:], k[..., 44:])
    assert not torch.allclose(moved[..., :44], k[..., :44])


def test_large_shift_and_inverse_is_identity():
    k = keys_at(torch.randn(1, 24, 2, HEAD_DIM), 0.0)
    back = shift_keys_in_time(shift_keys_in_time(k, 4096.0), -4096.0)
    assert torch.allclose(back, k, atol=1e-4)


def test_factorised_score_equals_double_sum():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 30, 4, 16, generator=g)
    keys = {m: torch.randn(2, 7, 4, 16, generator=g) for m in range(5)}
    fast = factorised_scores(q.sum(1), {m: k.sum(1) for m, k in keys.items()}, 16, 0.5)
    slow = brute_force_scores(q, keys, scored_heads=2)  # half of 4 heads
    for m in keys:
        assert abs(fast[m] - slow[m]) <= 1e-5 * max(1.0, abs(slow[m]))


def test_score_matrix_is_per_clip_and_differentiable():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(3, 4, 16, generator=g, requires_grad=True)
    keys = {m: torch.randn(3, 4, 16, generator=g) for m in (2, 5, 7)}
    matrix = score_matrix(q, list(keys.values()), 16, 0.5)
    assert matrix.shape == (3, 3)
    # clip 1's score of block 5 by hand: scored heads 0-1, mean over them, / sqrt(16)
    by_hand = (q[1, :2] * keys[5][1, :2]).sum(-1).mean() / 4
    assert torch.allclose(matrix[1, 1], by_hand, atol=1e-6)
    means = factorised_scores(q, keys, 16, 0.5)  # the selection's scores: the batch mean
    assert all(abs(means[m] - matrix[:, i].mean().item()) < 1e-5 for i, m in enumerate(keys))
    matrix[:, 0].sum().backward()
    assert q.grad[:, :2].abs().sum() > 0 and q.grad[:, 2:].abs().sum() == 0  # unscored heads get no gradient


def test_include_required_drops_the_lowest_scored():
    scores = {2: 5.0, 3: 1.0, 5: 4.0, 8: 3.0, 9: 2.0}
    assert include_required([2, 5, 8, 9], [3], scores, 4) == [2, 3, 5, 8]  # 9 scored lowest
    assert include_required([2, 5, 8, 9], [5], scores, 4) == [2, 5, 8, 9]  # already selected: unchanged
    assert include_required([], [3], scores, 4) == [3]


def test_dynamic_picks_planted_block_and_sorts_temporally():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(1, 2, 8, generator=g)
    keys = {m: 0.01 * torch.randn(1, 2, 8, generator=g) for m in range(2, 12)}
    keys[5] = 3 * target
    keys[9] = 2 * target
    scores = factorised_scores(target, keys, 8, 1.0)
    chosen = select_blocks(list(keys), PackForcingConfig(top_k=2, mid_capacity=10), scores)
    assert chosen == [5, 9]


def test_fifo_random_window_full_behave_as_named():
    bank = [2, 3, 5, 8, 9]
    assert select_blocks(bank, PackForcingConfig(policy="fifo", top_k=2)) == [8, 9]
    assert select_blocks(bank, PackForcingConfig(policy="full")) == bank
    assert select_blocks(bank, PackForcingConfig(policy="window", top_k=2)) == []
    cfg = PackForcingConfig(policy="random", top_k=3, mid_capacity=5)
    draws = {tuple(select_blocks(bank, cfg, generator=torch.Generator().manual_seed(s))) for s in range(20)}
    assert len(draws) > 3 and all(len(d) == 3 and list(d) == sorted(d) and set(d) <= set(bank) for d in draws)
    same_seed = [select_blocks(bank, cfg, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert same_seed[0] == same_seed[1]
