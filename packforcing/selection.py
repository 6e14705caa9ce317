"""Which compressed mid blocks a generated block attends (top-k selection)."""

import math

import torch

from .config import PackForcingConfig


def score_matrix(query_sum: torch.Tensor, key_sums: list[torch.Tensor], head_dim: int,
                 head_fraction: float) -> torch.Tensor:
    """(B, M) per-clip scores, differentiable: (sum_i q_i) . (sum_j k_j) / sqrt(d),
    averaged over the scored heads. query_sum: (B, H, D); key_sums: M tensors (B, H, D).

    The double sum of dot products factorises into one dot product of sums, so scoring
    costs O(heads * d) per block and never forms an attention matrix."""
    scored = max(1, int(round(query_sum.shape[1] * head_fraction)))
    keys = torch.stack([k[:, :scored].to(query_sum) for k in key_sums], dim=1)  # (B, M, h, D)
    return (query_sum[:, None, :scored] * keys).sum(-1).mean(-1) / math.sqrt(head_dim)


def factorised_scores(query_sum: torch.Tensor, key_sums: dict[int, torch.Tensor], head_dim: int,
                      head_fraction: float) -> dict[int, float]:
    """s_m = mean over (scored heads, batch) of (sum_i q_i) . (sum_j k_j) / sqrt(d)."""
    if not key_sums:
        return {}
    matrix = score_matrix(query_sum.detach().double(), [k.detach() for k in key_sums.values()], head_dim, head_fraction)
    return dict(zip(key_sums, matrix.mean(0).tolist()))


def select_blocks(
    bank: list[int],
    config: PackForcingConfig,
    scores: dict[int, float] | None = None,
    generator: torch.Generator | None = None,
    previous: list[int] | None = None,
) -> list[int]:
    """Mid-bank blocks to attend, in temporal order. `previous`: the last block's
    selection, which config.selection_hysteresis favours (dynamic only)."""
    k = config.top_k
    if config.policy == "full":
        return list(bank)
    if config.policy == "window" or k == 0:
        return []
    if len(bank) <= k:
        return sorted(bank)
    if config.policy == "fifo":
        return sorted(bank)[-k:]
    if config.policy == "random":
        order = torch.randperm(len(bank), generator=generator).tolist()
        return sorted(bank[i] for i in order[:k])
    if scores is None:
        raise ValueError("dynamic selection needs scores for the mid bank")
    missing = [m for m in bank if m not in scores]
    if missing:
        raise ValueError(f"dynamic selection is missing scores for mid blocks {missing}")
    if config.selection_hysteresis > 0 and previous:
        # a selected block keeps its place until a challenger beats it by the margin
        margin = config.selection_hysteresis * (max(scores[m] for m in bank) - min(scores[m] for m in bank))
        scores = {m: scores[m] + (margin if m in previous else 0.0) for m in bank}
    # Ties break towards the newer block, so a flat score degrades to FIFO.
    ranked = sorted(bank, key=lambda m: (scores[m], m), reverse=True)
    return sorted(ranked[:k])


def selection_change(previous: list[int], selected: list[int]) -> float | None:
    """Fraction of the selected mid blocks that the previous block did not select (0 =
    the same blocks, 1 = all new); None when either block selected nothing."""
    if not previous or not selected:
        return None
    return len(set(selected) - set(previous)) / len(selected)


def include_required(selected: list[int], required: list[int], scores: dict[int, float], k: int) -> list[int]:
    """`selected` with `required` added, the lowest-scored others dropped to stay within
    k. Training only: it puts a block's true revisit source in front of the model, so
    it can learn to recall from compressed tokens before its own selection finds them."""
    keep = list(dict.fromkeys(required))[:k]
    rest = sorted((m for m in selected if m not in keep), key=lambda m: (scores.get(m, 0.0), m), reverse=True)
    return sorted(keep + rest[: k - len(keep)])
