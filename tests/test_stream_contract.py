"""The stream's bookkeeping against hand counts: geometry, frame and second counters,
timings, the run's end, the frame each pass is told about, and the refusals.

The fold backbone at 64x64: 16 tokens per latent frame, 64 per block, 2 per compressed
block; a block is 4 latent frames = 16 pixel frames = 1 s at 16 FPS."""

import dataclasses

import numpy as np
import pytest
import torch
from dense_reference import fold_backbone, one_thread  # noqa: F401  (fixture)

from packforcing.config import PackForcingConfig
from packforcing.controls import LiveControls
from packforcing.decoding import Decoded
from packforcing.events import Block, Frames, RunEnd, RunStart
from packforcing.sampler import PackForcingSampler
from packforcing.video import to_uint8

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = PackForcingConfig(policy="fifo", sink_frames=4, top_k=2)


@pytest.fixture(scope="module")
def run():
    backbone = fold_backbone(64, 64)
    frames_told = []
    backbone.on_frame = frames_told.append
    try:
        sampler = PackForcingSampler(backbone, CONFIG, seed=0)
        events = list(sampler.stream("x", 6, "fold"))
    finally:
        backbone.on_frame = None
    return sampler, events, frames_told


def test_geometry_hand_counted(run):
    _, events, _ = run
    start = events[0]
    assert isinstance(start, RunStart) and start.num_blocks == 6
    assert start.geometry == {
        "tokens_per_latent_frame": 16, "tokens_per_block": 64, "compressed_tokens_per_block": 2,
        "bounded_context_tokens": 3 * 64 + 2 * 2,  # sink + recent + current, and top_k compressed
        "bytes_per_token": 2 * 2 * 48 * 4,  # K and V, 2 layers, 48 wide, fp32
        "latent_shape": [16, 4, 8, 8], "pixel_size": [64, 64], "fps": 16, "frames_per_latent": 4,
                              "seconds_per_block": 1.0,
    }
    at_24 = PackForcingSampler(dataclasses.replace(fold_backbone(64, 64), fps=24), CONFIG).geometry()
    assert at_24["seconds_per_block"] == 16 / 24  # 4 latent frames x 4 pixel frames at 24 FPS


def test_counters_timings_and_the_end(run):
    _, events, _ = run
    blocks = [e for e in events if isinstance(e, Block)]
    assert [e.frames.shape for e in events if isinstance(e, Frames)] == [(16, 64, 64, 3)] * 6
    assert [e.frames_total for e in blocks] == [16, 32, 48, 64, 80, 96]
    assert [e.video_seconds for e in blocks] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # a block attends the bounded context once the bank holds top_k blocks
    assert [e.context_tokens for e in blocks] == [64, 128, 192, 194, 196, 196]
    for e in blocks:
        assert set(e.timings) == {"transformer", "decode", "compress"}
        assert all(t >= 0 for t in e.timings.values()) and sum(e.timings.values()) <= e.seconds
    end = events[-1]
    assert isinstance(end, RunEnd) and (end.blocks, end.stopped) == (6,
                                                                     False) and end.seconds >= sum(e.seconds
                                                                                                   for e in blocks)


def test_every_pass_is_told_its_absolute_frame(run):
    # 4 denoising passes and the write pass at the block's first frame; from block 2 on, the
    # block leaving the recent window is compressed at its own first frame
    _, _, told = run
    expected = []
    for c in range(6):
        expected += [4.0 * c] * 5 + ([4.0 * (c - 1)] if c >= 2 else [])
    assert told == expected


def test_a_stop_before_the_first_block():
    sampler = PackForcingSampler(fold_backbone(64, 64), CONFIG, seed=0)
    events = list(sampler.stream("x", 4, "fold", should_stop=lambda: True))
    assert [type(e) for e in events] == [RunStart, RunEnd] and (events[-1].blocks, events[-1].stopped) == (0, True)


def test_pixels_to_uint8_hand_worked():
    # [-1, 1] -> [0, 255]: 127.5 (x + 1), rounded half to even, clamped; (1, 3, T, H, W) -> (T, H, W, 3)
    pixels = torch.tensor([-2.0, -1.0, 0.0, 1.0 / 255, 1.0, 3.0]).view(1, 1, 6, 1, 1).repeat(1, 3, 1, 1, 1)
    pixels[:, 1] = 0.5
    out = to_uint8(pixels)
    assert out.dtype == np.uint8 and out.shape == (6, 1, 1, 3)
    assert out[:, 0, 0, 0].tolist() == [0, 0, 128, 128, 255, 255] and out[:, 0, 0, 1].tolist() == [191] * 6


def test_refusals_name_the_problem():
    tiny = fold_backbone(32, 32)  # latent 4 x 4: too small for the 8x spatial compression
    with pytest.raises(ValueError, match="too small to compress a block"):
        PackForcingSampler(tiny, PackForcingConfig(sink_frames=4, top_k=2, mid_capacity=3))
    PackForcingSampler(tiny, PackForcingConfig(policy="window", sink_frames=4))  # nothing to compress: fine
    with pytest.raises(ValueError, match="compression='hr' needs an HR compressor"):
        PackForcingSampler(fold_backbone(64, 64), PackForcingConfig(compression="hr"))


def test_a_guided_batch_of_clips_keeps_each_clip_to_its_own_cache_rows():
    # a probe may batch clips: with guidance each forward holds [prompts, zeroed prompts]
    # over a cache written per clip, so clip 0 must not depend on clip 1's prompt
    backbone = fold_backbone(64, 64)
    config = PackForcingConfig(policy="fifo", sink_frames=4, top_k=2, guidance_scale=3.0)
    clips = {}
    for other in ("a blue cube", "green grass"):
        sampler = PackForcingSampler(backbone, config, seed=0)
        text = torch.cat([backbone.encode_prompt("a red ball"), backbone.encode_prompt(other)])
        out = []
        with torch.no_grad():
            for c in range(4):  # the public block loop
                sampler.begin_block(c)
                x0 = sampler.denoise_block(c, text)
                sampler.memory.admit(sampler.write_block(c, x0, text), x0, Decoded(pixels=backbone.codec.decode(x0)),
                                     text)
                out.append(x0)
        assert sampler.memory.cache.mid[1].keys[0].shape[0] == 2  # one cache row per clip
        clips[other] = torch.stack(out)
    a, b = clips.values()
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-5)  # clip 0 alike whatever clip 1 asked for
    assert not torch.allclose(a[:, 1], b[:, 1], atol=1e-3)
    # dynamic scores the batch's prompt halves against the cache written per clip
    sampler = PackForcingSampler(backbone, config.replace(policy="dynamic", mid_capacity=3), seed=0)
    with torch.no_grad():
        for c in range(4):
            sampler.begin_block(c)
            x0 = sampler.denoise_block(c, text)
            if c == 3:
                assert list(sampler.memory.cache.scores) == [1] and sampler.memory.cache.selected == [1]
            sampler.memory.admit(sampler.write_block(c, x0, text), x0, Decoded(pixels=backbone.codec.decode(x0)), text)


@pytest.mark.parametrize("policy, banks, kv_tokens", [
    ("full", [[], [], [], [1], [1, 2]], [64, 128, 192, 256, 320]),  # every block kept whole
    ("window", [[], [], [], [], []], [64, 128, 128, 128, 128]),  # sink + recent only
], ids=["full", "window"])
def test_full_keeps_every_block_whole_and_window_none(policy, banks, kv_tokens):
    sampler = PackForcingSampler(fold_backbone(64, 64), PackForcingConfig(policy=policy, sink_frames=4), seed=0)
    blocks = [e for e in sampler.stream("x", 5, "fold") if isinstance(e, Block)]
    assert [e.mid_bank for e in blocks] == banks and [e.mid_selected for e in blocks] == banks
    assert [e.kv_bytes for e in blocks] == [t * 768
                                            for t in kv_tokens]  # 768 bytes per token (K, V, 2 layers, 48 wide, fp32)


def test_a_steered_camera_ends_with_its_run():
    # the next run on the same sampler starts from the model's default, not the last steer
    backbone, seen = fold_backbone(64, 64), []
    backbone.move_camera = lambda index, direction, prompt: seen.append(direction) or {"direction": direction}
    sampler = PackForcingSampler(backbone, PackForcingConfig(policy="window", sink_frames=4), seed=0)
    list(sampler.stream("x", 2, "fold", controls=LiveControls(camera="left")))
    list(sampler.stream("x", 2, "fold"))
    assert seen == ["left", "left", None, None]
