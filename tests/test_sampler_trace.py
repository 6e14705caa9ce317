
import pytest
import torch

from packforcing.backbones.tiny import build_tiny_random
from packforcing.config import PackForcingConfig
from packforcing.events import Block, Frames, RunEnd, RunStart, write_jsonl
from packforcing.events import block_events as blocks_of
from packforcing.pipeline import PackForcingPipeline
from packforcing.sampler import PackForcingSampler
from packforcing.scheduler import euler_step
from packforcing.tracefile import read_trace

FIELDS = ["block", "sink", "mid_bank", "mid_selected", "recent", "current", "selection_scores", "rope_shift",
          "kv_bytes", "full_cache_bytes", "context_tokens", "seconds"]


@pytest.fixture(scope="module")
def backbone():
    return build_tiny_random(width=64, height=64)


def run(backbone, blocks, check=None, **cfg):
    # one denoising step a block unless asked: these tests follow the cache, not the frames
    sampler = PackForcingSampler(backbone, PackForcingConfig(**{"timesteps": (1000.0,), **cfg}), seed=0)
    events = []
    for event in sampler.stream("a test prompt", blocks, "tiny-random"):
        if isinstance(event, Block) and check:
            check(sampler, event)
        events.append(event)
    return events



def test_kv_bytes_flat_after_bank_full_and_ordering(backbone):
    small = dict(top_k=2, mid_capacity=4)
    kv = {p: [e.kv_bytes for e in blocks_of(run(backbone, 12, policy=p, **small))]
          for p in ("window", "dynamic", "full")}
    fill = 2 + 1 + 4  # sink + recent + bank
    assert len(set(kv["dynamic"][fill:])) == 1
    assert len(set(kv["window"][3:])) == 1
    steps = {b - a for a, b in zip(kv["full"][3:], kv["full"][4:])}
    assert len(steps) == 1 and steps.pop() > 0  # full grows linearly
    assert kv["window"][-1] < kv["dynamic"][-1] < kv["full"][-1]


def test_trace_fields_consistent_with_cache(backbone):
    def check(sampler, e):
        cache = sampler.memory.cache
        held = sum(t.numel() * t.element_size() for part in (cache.sink, cache.mid, cache.recent)
                   for b in part.values() for t in b.keys + b.values)
        assert e.kv_bytes == held
        assert e.current == e.block
        assert set(e.mid_selected) <= set(e.mid_bank) and e.mid_selected == sorted(e.mid_selected)
        assert len(e.mid_selected) <= 2
        assert set(e.selection_scores) == (set(e.mid_bank) if e.mid_bank else set())
        assert set(e.rope_shift) == set(e.sink) | set(e.mid_selected) | set(e.recent) | {e.block}
        tokens = len(e.sink) * 64 + len(e.mid_selected) * 2 + len(e.recent) * 64 + 64
        assert e.context_tokens == tokens == sum(v for k, v in e.tokens.items() if k != "mid_archived")
        assert e.full_cache_bytes == (e.block + 1) * 64 * sampler.backbone.dims().bytes_per_token
        if e.block >= 3:
            assert e.recent == [e.block - 1] and e.sink == [0, 1]

    events = run(backbone, 12, check, top_k=2, mid_capacity=3)
    assert isinstance(events[0], RunStart) and isinstance(events[-1], RunEnd) and events[-1].blocks == 12
    for e in blocks_of(events):
        d = e.__dict__
        assert all(f in d for f in FIELDS)
    late = blocks_of(events)[-1]
    assert late.evicted or any(b.evicted for b in blocks_of(events))
    # packing: sinks and selected mid blocks sit contiguously before the recent block
    packed = sorted(late.positions[b] + late.rope_shift[b] for b in late.sink + late.mid_selected + late.recent)
    assert packed == [late.positions[late.recent[0]] - 4 * i for i in range(len(packed) - 1, -1, -1)]


def test_rope_repair_off_means_no_shift(backbone):
    late = blocks_of(run(backbone, 9, top_k=2, mid_capacity=3, rope_repair=False))[-1]
    assert set(late.rope_shift.values()) == {0.0}


def test_jsonl_round_trip(tmp_path, backbone):
    events = [e for e in run(backbone, 5, top_k=2, mid_capacity=3) if not isinstance(e, Frames)]
    path = tmp_path / "trace.jsonl"
    write_jsonl(events, path)
    back = read_trace(path)
    assert [type(e) for e in back] == [type(e) for e in events]
    assert back[-2].rope_shift == events[-2].rope_shift and back[-2].kv_bytes == events[-2].kv_bytes
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "block", "block": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 1"):
        read_trace(bad)


def test_streaming_decode_equals_full_decode(backbone):
    codec = backbone.codec
    latent = torch.randn(1, 16, 9, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = codec.decode(latent)
        stream = codec.stream_decoder()
        parts = [stream.decode_next(latent[:, :, :4]), stream.decode_next(latent[:, :, 4:5]),
                 stream.decode_next(latent[:, :, 5:])]
    assert [p.shape[2] for p in parts] == [13, 4, 16]
    assert torch.allclose(torch.cat(parts, dim=2), full, atol=1e-6)


def test_pipeline_validates_and_streams_deterministically():
    pipe = PackForcingPipeline.from_name("tiny-random")
    for prompt, seconds, cfg, word in [("", 4, {}, "empty"), ("x" * 2000, 4, {}, "2,000 characters"),
                                       ("ok", 0.5, {}, "duration=0.5"),
                                       ("ok", 4, {"sink_frames": 40}, "sink_frames=40"),
                                       ("ok", 4, {"top_k": 100, "mid_capacity": 200}, "top_k=100")]:
        with pytest.raises(ValueError, match=word):
            pipe.validate(prompt, seconds, PackForcingConfig(**cfg))
    a = pipe("a red circle", 2, seed=5, config=PackForcingConfig(sink_frames=4))
    b = pipe("a red circle", 2, seed=5, config=PackForcingConfig(sink_frames=4))
    assert a.frames.shape == (13 + 16, 128, 128, 3) and (a.frames == b.frames).all()


def test_stop_ends_run_and_frees_cache(backbone):
    sampler = PackForcingSampler(backbone, PackForcingConfig(top_k=2, mid_capacity=3), seed=0)
    seen, events = [], []
    gen = sampler.stream("x", 10, "tiny-random", should_stop=lambda: len(seen) >= 3)
    for e in gen:
        if isinstance(e, Block):
            seen.append(e)
        events.append(e)
    assert len(seen) == 3 and events[-1].stopped and sampler.memory.cache.kv_bytes() == 0


def test_every_compression_and_kv_source_runs_with_same_memory(backbone):
    results = {}
    for compression in ("lr", "hr", "hr+lr"):
        for kv_source in ("context-pass", "projection"):
            events = run(backbone, 5, top_k=2, mid_capacity=3, compression=compression, kv_source=kv_source)
            results[compression, kv_source] = blocks_of(events)[-1]
    assert len({e.kv_bytes for e in results.values()}) == 1  # 2 compressed tokens per block either way
    assert len({e.context_tokens for e in results.values()}) == 1
    scores = [tuple(e.selection_scores.values()) for e in results.values()]
    assert len(set(scores)) == len(scores)  # each mode writes different mid keys


def test_interleaved_streams_leave_the_callers_grad_mode_alone(backbone):
    # two streams stepped in turn (the ablation view) must not restore each other's mode
    config = PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=3)
    a = PackForcingSampler(backbone, config, seed=0).stream("a", 2, "tiny-random")
    b = PackForcingSampler(backbone, config, seed=1).stream("b", 2, "tiny-random")
    assert torch.is_grad_enabled()
    for _ in range(3):
        next(a), next(b)
        assert torch.is_grad_enabled()
    list(a), list(b)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("rule, lo, hi", [("euler", 0.97, 1.03), ("renoise", 0.0, 0.9)])
def test_step_rule_on_gaussian_data_with_the_exact_denoiser(backbone, rule, lo, hi):
    # For data ~ N(0, 1) the exact x0 predictor is E[x0 | x] = (1-s) x / ((1-s)^2 + s^2),
    # so a correct sampler must return samples of std ~1. Euler (the flow ODE) does;
    # renoise keeps only the posterior mean at each step and shrinks towards it.
    steps = 64
    cfg = PackForcingConfig(timesteps=tuple(1000.0 * (1 - i / steps) for i in range(steps)), shift=1.0, step_rule=rule)
    sampler = PackForcingSampler(backbone, cfg, seed=0)
    sampler.latent_shape = (1, 16, 32, 16, 16)  # 131k samples: std known to < 1%

    def exact_velocity(x, timestep, *args, **kwargs):
        s = timestep / cfg.num_train_timesteps
        x0 = (1 - s) * x / ((1 - s) ** 2 + s**2)
        return (x - x0) / s

    sampler.forward = exact_velocity
    sampler.begin_block(0)
    std = sampler.denoise_block(0, text=torch.zeros(1, 1, 8)).std().item()
    assert lo < std < hi, f"{rule}: std {std:.3f}"


@pytest.mark.parametrize("scale, velocity", [(1.0, 2.0), (0.0, 1.0), (3.0, 4.0)])
def test_guidance_combines_conditional_and_unconditional_velocity(backbone, scale, velocity):
    cfg = PackForcingConfig(timesteps=(1000.0,), shift=1.0, step_rule="euler", guidance_scale=scale)
    sampler = PackForcingSampler(backbone, cfg, seed=0)
    text = torch.ones(1, 3, 8)
    seen = []

    def stub(x, timestep, text_in, *args, **kwargs):  # per row: prompt v = 2, zeroed prompt v = 1
        seen.append([row.abs().sum().item() for row in text_in])
        return torch.cat([torch.full_like(x[:1], 2.0 if row.abs().sum() > 0 else 1.0) for row in text_in])

    sampler.forward = stub
    noise = torch.randn(sampler.latent_shape, generator=torch.Generator().manual_seed(0))
    sampler.begin_block(0)
    x0 = sampler.denoise_block(0, text)  # one step at sigma 1: x0 = noise - v
    torch.testing.assert_close(x0, noise - velocity)
    assert seen == ([[24.0]] if scale == 1.0 else [[24.0, 0.0]])  # one pass; off adds no row


def test_batched_guidance_equals_two_passes(backbone):
    """The guided halves share one forward: same frames, selections and scores as the
    two-pass reference, whose prompt pass alone scores the selection."""

    class TwoPass(PackForcingSampler):
        def denoise_block(self, index, text):
            cfg = self.config
            x = torch.randn(self.latent_shape, generator=self.noise)
            for i, sigma in enumerate(cfg.sigmas):
                t = sigma * cfg.num_train_timesteps
                v = self.forward(x, t, text)
                v_uncond = self.forward(x, t, torch.zeros_like(text))
                v = v_uncond + cfg.guidance_scale * (v - v_uncond)
                x0 = (x.double() - sigma * v.double()).float()
                if i + 1 < len(cfg.sigmas):
                    x = euler_step(x.double(), x0.double(), sigma, cfg.sigmas[i + 1]).float()
            return x0

    cfg = PackForcingConfig(top_k=2, mid_capacity=4, step_rule="euler", guidance_scale=3.0)
    runs = [list(cls(backbone, cfg, seed=0).stream("a test prompt", 7, "tiny-random"))
            for cls in (PackForcingSampler, TwoPass)]
    (blocks_a, blocks_b), (frames_a,
                           frames_b) = ([[e for e in r if isinstance(e, kind)] for r in runs]
                                        for kind in (Block, Frames))
    assert [b.mid_selected for b in blocks_a] == [b.mid_selected for b in blocks_b]
    for a, b in zip(blocks_a, blocks_b):
        assert a.selection_scores.keys() == b.selection_scores.keys()
        assert all(abs(a.selection_scores[m] - b.selection_scores[m]) <= 1e-4 * abs(b.selection_scores[m])
                   for m in a.selection_scores)
    assert any(b.mid_selected for b in blocks_a)  # selection was exercised
    for fa, fb in zip(frames_a, frames_b):
        assert abs(fa.frames.astype(int) - fb.frames.astype(int)).max() <= 1
    unguided = [e
                for e in PackForcingSampler(backbone, cfg.replace(guidance_scale=1.0), seed=0).stream("a test prompt",
                                                                                                      7, "tiny-random")
                if isinstance(e, Frames)]
    assert abs(unguided[-1].frames.astype(int) - frames_a[-1].frames.astype(int)).max() > 10  # guidance matters


def test_a_block_is_denoised_only_after_it_begins(backbone):
    """The public block loop: begin_block turns the cache to a block; denoising another
    block (or none) names the call that is missing."""
    sampler = PackForcingSampler(backbone, PackForcingConfig(timesteps=(1000.0,)), seed=0)
    text = backbone.encode_prompt("a test prompt")
    with pytest.raises(ValueError, match=r"block 0 is not the current block \(None\); call begin_block\(0\) first"):
        sampler.denoise_block(0, text)
    sampler.begin_block(0)
    with pytest.raises(ValueError, match=r"block 1 is not the current block \(0\)"):
        sampler.denoise_block(1, text)
    assert sampler.denoise_block(0, text).shape == sampler.latent_shape
