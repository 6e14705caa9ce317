"""Parity with dynamic selection, compression and RoPE packing.

The reference here recomputes the whole stream on its own: plain dense attention over
explicitly listed tokens, keys kept before RoPE and rotated from scratch at the position
each block is packed to, its own LR compression, scores, top-k and bank. The engine's
frames must match it, and its trace must list exactly the blocks and positions the
reference attended. Eight blocks, so the bank fills, evicts and shifts."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from dense_reference import brute_force_scores, fold_backbone, grid, one_thread, rotate, top_k_newest_wins  # noqa: F401  (fixture)

from packforcing.config import PackForcingConfig
from packforcing.events import Block
from packforcing.sampler import PackForcingSampler

pytestmark = pytest.mark.usefixtures("one_thread")

BLOCKS, SEED, PROMPT = 8, 3, "a red ball rolls past a blue cube"
SINK, RECENT, TOP_K, CAPACITY, STRIDE = 1, 1, 2, 3, 3  # blocks; query stride
TOKENS, COMPRESSED = 64, 2  # 64x64: 4 frames x 4 x 4 tokens; compressed grid 2 x 1 x 1
SIGMAS = [5 * s / (1 + 4 * s) for s in (1.0, 0.75, 0.5, 0.25)]  # shift 5


class DenseProcessor:
    """Wan self-attention at explicit positions over an explicit context, softmax written out."""

    def __init__(self, ref, layer):
        self.ref, self.layer = ref, layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
        v = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        out = self.ref.attend(self.layer, q, k, v)
        return attn.to_out[0](out.flatten(2, 3).to(q.dtype))


class DenseStream:
    def __init__(self, model, codec, text, pack=True, proportional=False, projection=False, worst=False, guidance=1.0):
        self.model, self.codec, self.text, self.guidance = model, codec, text, guidance
        self.pack, self.proportional, self.projection, self.worst = pack, proportional, projection, worst
        model.set_attn_processor({n: DenseProcessor(self, int(n.split(".")[1])) if ".attn1." in n else p
                                  for n, p in model.attn_processors.items()})
        self.noise = torch.Generator().manual_seed(SEED)
        self.store = {}  # block -> raw keys / values per layer, positions, layer-0 write queries
        self.sink, self.bank, self.recent = [], [], []
        self.attended, self.scores, self.selected, self.placed = [], {}, [], {}

    # --- one forward --------------------------------------------------------------
    def forward(self, latent, timestep, positions, context, keep=None, score=False, text=None):
        self.positions, self.context, self.keep, self.score = positions, context, keep, score
        t = torch.tensor([float(timestep)])
        text = self.text if text is None else text
        return self.model(latent, timestep=t, encoder_hidden_states=text, return_dict=False)[0]

    def velocity(self, x, timestep, positions, score):
        """The prompt's velocity; with guidance, v_u + g (v_c - v_u), the unconditional
        pass seeing a zeroed prompt and the same context (selected by the prompt's pass)."""
        v = self.forward(x, timestep, positions, context=True, score=score)
        if self.guidance == 1.0:
            return v
        v_uncond = self.forward(x, timestep, positions, context=True, text=torch.zeros_like(self.text))
        return v_uncond + self.guidance * (v - v_uncond)

    def attend(self, layer, q, k, v):
        if self.keep is not None:
            entry = self.store.setdefault(self.keep, {"k": [], "v": [], "pos": self.positions})
            entry["k"].append(k), entry["v"].append(v)
            if layer == 0:
                entry["q"] = q[:, ::STRIDE]
        if layer == 0 and self.score:
            self.select(q)
        keys, values, bias = [rotate(k, *self.positions)], [v], [torch.zeros(k.shape[1], dtype=torch.float64)]
        for b in (self.attended if self.context else []):
            entry, (t, h, w) = self.store[b], self.store[b]["pos"]
            keys.insert(-1, rotate(entry["k"][layer], t - 4 * b + self.placed[b], h, w))
            values.insert(-1, entry["v"][layer])
            weight = math.log(TOKENS / COMPRESSED) if self.proportional and b in self.bank else 0.0
            bias.insert(-1, torch.full((entry["k"][layer].shape[1],), weight, dtype=torch.float64))
        q, keys, values = rotate(q, *self.positions).double(), torch.cat(keys, 1).double(), torch.cat(values,
                                                                                                      1).double()
        logits = torch.einsum("bihd,bjhd->bhij", q, keys) / math.sqrt(q.shape[-1]) + torch.cat(bias)
        return torch.einsum("bhij,bjhd->bihd", logits.softmax(-1), values)

    def select(self, q):
        queries = torch.cat([q[:, ::STRIDE]] + [self.store[r]["q"] for r in self.recent], dim=1)
        self.scores = brute_force_scores(queries, {m: self.store[m]["k"][0] for m in self.bank}, scored_heads=2)
        self.selected = top_k_newest_wins({m: -s if self.worst else s for m, s in self.scores.items()}, TOP_K)
        self.arrange(c=self.current)

    def arrange(self, c):
        """Attended blocks in order; packed contiguously just before block c (sink, selected, recent)."""
        self.attended = self.sink + self.selected + self.recent
        n = len(self.attended)
        self.placed = {b: (4.0 * (c - n + i) if self.pack else 4.0 * b) for i, b in enumerate(self.attended)}

    # --- one block ------------------------------------------------------------------
    def block(self, c):
        self.current, self.scores, self.selected = c, {}, []
        self.arrange(c)
        here = grid(4, 4, 4, t0=4.0 * c)
        x = torch.randn(1, 16, 4, 8, 8, generator=self.noise)
        with torch.no_grad():
            for i, sigma in enumerate(SIGMAS):
                v = self.velocity(x, sigma * 1000, here, score=(i == 0 and bool(self.bank)))
                x0 = (x.double() - sigma * v.double()).float()
                if i + 1 < len(SIGMAS):
                    x = ((1 - SIGMAS[i + 1]) * x0.double() + SIGMAS[i + 1]
                         * torch.randn(x.shape, generator=self.noise).double()).float()
            seen = dict(sink=list(self.sink), mid_bank=list(self.bank), mid_selected=list(self.selected),
                        recent=list(self.recent), placed=dict(self.placed), scores=dict(self.scores))
            self.forward(x0, 0.0, here, context=True, keep=c)
            self.admit(c, x0)
        return x0, seen

    def admit(self, c, x0):
        self.x0 = getattr(self, "x0", {}) | {c: x0}
        (self.sink if len(self.sink) < SINK else self.recent).append(c)
        if len(self.recent) > RECENT:
            b = self.recent.pop(0)
            pixels = self.codec.decode(self.x0[b])
            lr = self.codec.encode(F.avg_pool3d(pixels, (2, 4, 4)))  # (1, 16, 2, 2, 2): the 2 x 1 x 1 grid
            centres = grid(2, 1, 1, t0=4.0 * b + 0.5, span=(2, 4, 4), centre=(0, 1.5, 1.5))
            del self.store[b]
            if self.projection:
                tokens = self.model.patch_embedding(lr).flatten(2).transpose(1, 2)
                attn = [blk.attn1 for blk in self.model.blocks]
                self.store[b] = {"pos": centres,
                                 "k": [a.norm_k(a.to_k(tokens)).unflatten(2, (a.heads, -1)) for a in attn],
                                 "v": [a.to_v(tokens).unflatten(2, (a.heads, -1)) for a in attn]}
            else:
                self.forward(lr, 0.0, centres, context=False, keep=b)
            self.bank.append(b)
            if len(self.bank) > CAPACITY:
                self.bank.pop(0)


def engine_run(backbone, config):
    sampler = PackForcingSampler(backbone, config, seed=SEED)
    x0s, denoise = {}, sampler.denoise_block
    sampler.denoise_block = lambda index, text: x0s.setdefault(index, denoise(index, text))
    events = [e for e in sampler.stream(PROMPT, BLOCKS, "fold") if isinstance(e, Block)]
    return x0s, events


def reference_run(backbone, model, **options):
    ref = DenseStream(copy.deepcopy(model), backbone.codec, backbone.encode_prompt(PROMPT), **options)
    return [ref.block(c) for c in range(BLOCKS)]


@pytest.fixture(scope="module")
def pristine():
    backbone = fold_backbone(64, 64, seed=1)
    return backbone, copy.deepcopy(backbone.transformer)  # before the engine installs its processors


CASES = {
    "context-pass": dict(config={}, options={}),
    "projection+proportional": dict(config=dict(kv_source="projection", proportional_attention=True),
                                    options=dict(projection=True, proportional=True)),
    "guided": dict(config=dict(guidance_scale=3.0), options=dict(guidance=3.0)),
}


@pytest.mark.parametrize("case", CASES)
def test_dynamic_packed_stream_equals_dense_reference(pristine, case):
    backbone, model = pristine
    config = PackForcingConfig(sink_frames=4 * SINK, recent_blocks=RECENT, top_k=TOP_K, mid_capacity=CAPACITY,
                               query_stride=STRIDE, **CASES[case]["config"])
    x0s, events = engine_run(backbone, config)
    reference = reference_run(backbone, model, **CASES[case]["options"])
    for c, (e, (x0, seen)) in enumerate(zip(events, reference)):
        assert (e.sink, e.mid_bank, e.mid_selected, e.recent) == (seen["sink"], seen["mid_bank"], seen["mid_selected"],
                                                                  seen["recent"]), c
        assert {b: e.positions[b] + e.rope_shift[b] for b in seen["placed"]} == seen["placed"], c
        assert e.selection_scores.keys() == seen["scores"].keys()
        assert all(abs(e.selection_scores[m] - s) <= 1e-4 * max(1.0, abs(s)) for m, s in seen["scores"].items()), c
        assert (x0s[c] - x0).abs().max().item() <= 1e-5, f"block {c} differs by {(x0s[c] - x0).abs().max().item():.2e}"
    # the case exercised what it claims: a bank larger than top_k, evictions, moved blocks
    assert [e.mid_bank for e in events][-1] == [3, 4, 5] and sum(len(e.evicted) for e in events) == 3
    assert events[-1].rope_shift[0] == 12.0 and any(e.rope_shift[m] for e in events for m in e.mid_selected)
    assert any(set(e.mid_selected) != set(e.mid_bank[-TOP_K:]) for e in events)  # dynamic, not FIFO


def test_reference_notices_packing_and_selection(pristine):
    # negative controls: the same reference without packing, or attending the lowest
    # scored blocks, moves away from the engine's frames by 100x the tolerance
    backbone, model = pristine
    config = PackForcingConfig(sink_frames=4 * SINK, recent_blocks=RECENT, top_k=TOP_K, mid_capacity=CAPACITY,
                               query_stride=STRIDE)
    x0s, _ = engine_run(backbone, config)
    for wrong in (dict(pack=False), dict(worst=True)):
        reference = reference_run(backbone, model, **wrong)
        assert max((x0s[c] - x0).abs().max().item() for c,
                   (x0, _) in enumerate(reference)) > 1e-3, wrong  # 5e-7 when right
