"""Teacher forcing through the engine: a batch of clips streamed block by block through
the same cache, attention processors, compression and selection that sampling uses.

Per block the model predicts the flow velocity of a noised copy (the denoising pass),
then the block's clean copy is written into the cache (the write pass) and the block
leaving the recent window is compressed into the mid bank. Two levers cut the compute
per useful gradient, and neither changes a trained block's loss in the forward pass
(tests/embedded/test_teacher.py):

- `grad_history="sources"`: the write passes, and the compressed passes of blocks no
  later block recalls, run without gradient (Transformer-XL's memory). Gradient still
  reaches the compressor and the place embedding through the compressed passes of the
  blocks a trained revisit reads.
- `other_fraction < 1`: a block that revisits nothing in the mid bank trains its
  denoising loss only with this probability; otherwise its denoising pass is skipped
  (its dynamic selection is then scored in the write pass, from the clean block).
One option adds a signal: `recon_weight > 0` asks a small head to rebuild each mid
block's pooled latent from its HR-compressed tokens, so the compressor carries content
before anything has learned to read it (the head is training's only; sampling never
sees it).
Every random draw of a block is made whether or not it is trained, so two recipes see
the same noise on the same batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from ..attention import SelectionHook
from ..decoding import Decoded
from ..sampler import PackForcingSampler
from ..selection import score_matrix
from .camera_data import Clips, is_mid_revisit

GRAD_HISTORY = ("all", "sources", "none")


@dataclass(frozen=True)
class TeacherConfig:
    history_noise: float = 0.1  # largest noise added to the written history
    text_dropout: float = 0.1  # trains guidance's unconditional branch
    # the text dropout of blocks whose place only the mid bank holds (None: text_dropout).
    # With no prompt such a block's loss falls only by reading the history, so recall
    # cannot lean on the prompt's colour words; the same random draw decides either way.
    revisit_text_dropout: float | None = None
    revisit_weight: float = 3.0  # flow-loss weight of blocks whose place only the mid bank holds
    revisit_sigma_floor: float = 0.5  # their noise levels: recall must happen in the first Euler steps
    force_source: float = 0.5  # probability a mid revisit must attend its source (reading is learned)
    grad_history: str = "all"  # all (v11) | sources | none: which write/compressed passes keep gradient
    other_fraction: float = 1.0  # probability a block that recalls nothing trains its denoising loss
    recon_weight: float = 0.0  # auxiliary: rebuild a mid block's pooled latent from its compressed tokens
    # a block noised below this level has its flow loss weighted (sigma / level)^2. A model
    # that predicts the clean latent has flow error = its error / sigma: unweighted, the
    # levels under 0.1, which the sampler never visits (its last is 0.29), outweigh the rest.
    loss_sigma_floor: float = 0.0
    # auxiliary: on a mid revisit, each layer's attention mass on the mid block that filmed
    # the place is pushed up to read_floor (a hinge on its log, per query). The selection
    # loss trains only the first layer's scores, and only that layer reads the mid bank.
    read_weight: float = 0.0
    read_floor: float = 0.2
    # the hinge reaches only the samples noised at least this much, where the history decides
    # the layout (0: every trained revisit). v19 tried 0.5 with revisits at every level; it
    # did not keep the revisits' pan (docs/experiments.md, v19).
    read_sigma_min: float = 0.0

    def __post_init__(self):
        if self.grad_history not in GRAD_HISTORY:
            raise ValueError(f"grad_history={self.grad_history!r}; allowed: {GRAD_HISTORY}")
        for name in ("other_fraction", "text_dropout", "revisit_text_dropout", "read_sigma_min"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} must be in [0, 1]")
        if not 0.0 < self.read_floor <= 1.0 or self.read_weight < 0:
            raise ValueError(f"read_floor={self.read_floor!r} must be in (0, 1] and read_weight={self.read_weight!r} "
                             "at least 0")


def sample_sigmas(batch: int, gen: torch.Generator, floor: float = 0.0) -> torch.Tensor:
    """Half logit-normal (SD3's rectified flow), half uniform noise levels in [floor, 1]:
    uniform so the first Euler steps near 1, where a layout is decided, are trained too."""
    logit_normal = torch.sigmoid(torch.randn(batch, generator=gen))
    uniform = torch.rand(batch, generator=gen)
    s = torch.where(torch.rand(batch, generator=gen) < 0.5, logit_normal, uniform).clamp(1e-3, 1.0)
    return floor + (1 - floor) * s


def selection_ce(sampler: PackForcingSampler, hook: SelectionHook, sources: list[int]) -> torch.Tensor | None:
    """Per clip, the cross-entropy of the dynamic scores towards the mid blocks that filmed
    the place, scores scaled by their spread so only the ranking is trained (None when the
    bank holds nothing else to choose from)."""
    cache, cfg = sampler.memory.cache, sampler.config
    bank = list(cache.mid)
    if hook.query_sum is None or not sources or len(bank) <= len(sources):
        return None
    keys = [cache.mid[m].key_sum for m in bank]
    scores = score_matrix(hook.query_sum, keys, hook.query_sum.shape[-1], cfg.score_head_fraction)
    logits = scores / (scores.std(dim=1, keepdim=True).detach() + 1e-6)
    positive = torch.tensor([m in sources for m in bank])
    return -(logits.log_softmax(1)[:, positive].logsumexp(1))


RECON_POOL = (2, 4, 4)  # latent frames x rows x columns averaged per rebuilt value


class ReconHead(torch.nn.Module):
    """HR-compressed tokens (B, D, f, h, w) -> the block's latent pooled by RECON_POOL
    (B, C, f, 2h, 2w): each token rebuilds the 2x2 pooled cells it covers."""

    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.proj = torch.nn.Linear(dim, channels * 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.proj(rearrange(tokens, "b d f h w -> b f h w d"))
        return rearrange(x, "b f h w (c i j) -> b c f (h i) (w j)", i=2, j=2)


def recon_loss(backbone, head: ReconHead, latent: torch.Tensor) -> torch.Tensor:
    target = F.avg_pool3d(latent.float(), RECON_POOL)
    return F.mse_loss(head(backbone.hr_compressor(latent)).float(), target)


@dataclass
class Draw:
    """Every random number one block uses, drawn in one fixed order."""

    force: bool
    train: bool
    sigma: torch.Tensor
    noise: torch.Tensor
    keep: torch.Tensor
    level: torch.Tensor
    history: torch.Tensor


def draw(gen: torch.Generator, shape, revisit: bool, tc: TeacherConfig) -> Draw:
    batch = shape[0]
    dropout = tc.revisit_text_dropout if revisit and tc.revisit_text_dropout is not None else tc.text_dropout
    return Draw(
        force=torch.rand((), generator=gen).item() < tc.force_source,
        train=revisit or torch.rand((), generator=gen).item() < tc.other_fraction,
        sigma=sample_sigmas(batch, gen, tc.revisit_sigma_floor if revisit else 0.0),
        noise=torch.randn(shape, generator=gen),
        keep=(torch.rand(batch, 1, 1, generator=gen) >= dropout).float(),
        level=tc.history_noise * torch.rand(batch, 1, 1, 1, 1, generator=gen),
        history=torch.randn(shape, generator=gen),
    )


def recalled_sources(clips: Clips) -> set[int]:
    """The blocks some mid-bank revisit of the clip reads."""
    return {m for row in clips.sources if is_mid_revisit(row) for m in row["mid"]}


@dataclass
class ClipLoss:
    total: torch.Tensor | None  # weighted mean flow loss of the trained blocks
    selection: torch.Tensor | None  # mean selection cross-entropy over mid revisits
    block_losses: dict[int, float]  # block -> its flow loss (trained blocks only)
    revisits: list[int]  # trained blocks that revisit a place only the mid bank holds
    hits: list[float]  # un-forced mid revisits: 1 if the selection held a source
    recon: torch.Tensor | None = None  # mean auxiliary rebuild loss of the blocks bound for the mid bank
    read: torch.Tensor | None = None  # mean reading hinge over the trained mid revisits' layers


def _denoise_loss(sampler, x0, d: Draw, text, tc: TeacherConfig, device) -> torch.Tensor:
    cfg, batch = sampler.config, x0.shape[0]
    s = d.sigma.to(device).view(batch, 1, 1, 1, 1)
    noise = d.noise.to(device)
    v = sampler.forward((1 - s) * x0 + s * noise, d.sigma.to(device) * cfg.num_train_timesteps,
                        text * d.keep.to(device, text.dtype))
    weight = (s / tc.loss_sigma_floor).clamp(max=1.0) ** 2 if tc.loss_sigma_floor > 0 else 1.0
    return (weight * (v.float() - (noise - x0)) ** 2).mean()


def clip_loss(sampler: PackForcingSampler, clips: Clips, texts: list[torch.Tensor], tc: TeacherConfig,
              gen: torch.Generator, head: ReconHead | None = None) -> ClipLoss:
    """One teacher-forced pass over the clips; the cache is left empty. `head`: the
    rebuild head, needed when tc.recon_weight > 0."""
    cfg, device = sampler.config, sampler.backbone.device
    bf = cfg.block_frames
    sampler.backbone.place.set_clip(clips.xs)
    read = recalled_sources(clips) if tc.grad_history == "sources" else set()
    grad = torch.is_grad_enabled()
    flow, weights, sel, recon, read_terms = [], [], [], [], []
    out = ClipLoss(None, None, {}, [], [])
    try:
        for c, row in enumerate(clips.sources):
            x0 = clips.latent[:, :, c * bf : (c + 1) * bf].to(device)
            mid = [m for m in row["mid"] if m in sampler.memory.cache.mid] if is_mid_revisit(row) else []
            d = draw(gen, x0.shape, bool(mid), tc)
            hook = SelectionHook(mid[: cfg.top_k] if mid and d.force else [], mid if tc.read_weight > 0 else [])
            sampler.begin_block(c, hook=hook)
            if d.train:
                loss = _denoise_loss(sampler, x0, d, texts[c], tc, device)
                reading = read_hinge(hook.log_mass, tc.read_floor, d.sigma >= tc.read_sigma_min)
                if reading is not None:
                    read_terms.append(reading)
                flow.append(loss)
                weights.append(tc.revisit_weight if mid else 1.0)
                out.block_losses[c] = loss.item()
            if mid:
                out.revisits.append(c)
                if not hook.required:
                    out.hits.append(float(bool(set(sampler.memory.cache.selected) & set(mid))))
                ce = selection_ce(sampler, hook, mid)
                if ce is not None:
                    sel.append(ce.mean())
            clean = x0 + d.level.to(device) * d.history.to(device)
            px = clips.pixels[:, :, c * 16 : (c + 1) * 16].to(device)
            with torch.set_grad_enabled(grad and tc.grad_history == "all"):
                block = sampler.write_block(c, clean, texts[c])
            leaving = c - cfg.recent_blocks  # the block this admit may compress into the mid bank
            with torch.set_grad_enabled(grad and (tc.grad_history == "all" or leaving in read)):
                sampler.memory.admit(block, clean, Decoded(pixels=px), texts[c])
            if tc.recon_weight > 0 and c >= sampler.memory.cache.config.sink_blocks:
                recon.append(recon_loss(sampler.backbone, head, clean))
    finally:
        sampler.memory.reset()
    if flow:
        w = torch.tensor(weights, device=device)
        out.total = (torch.stack(flow) * w).sum() / w.sum()
    out.selection = torch.stack(sel).mean() if sel else None
    out.recon = torch.stack(recon).mean() if recon else None
    out.read = torch.stack(read_terms).mean() if read_terms else None
    return out


def read_hinge(log_mass: list[torch.Tensor], floor: float, keep: torch.Tensor) -> torch.Tensor | None:
    """Mean over layers, heads, queries and the kept samples (`keep`: (B,) bool) of
    max(0, log floor - log mass on the source); None when nothing is reported or kept."""
    if not log_mass or not keep.any():
        return None
    per_sample = torch.stack([F.relu(math.log(floor) - m).mean((1, 2)) for m in log_mass]).mean(0)
    return per_sample[keep.to(per_sample.device)].mean()
