"""The shipped embedded model loads from assets/ and generates deterministically on a CPU;
the camera clock conditions each pass on its place in the loop."""

import os

import numpy as np
import pytest
import torch

from packforcing.embedded.model import EMBEDDED_DIR, add_camera_clock, build_embedded
from packforcing.pipeline import PackForcingPipeline


@pytest.fixture(scope="module")
def pipe():
    return PackForcingPipeline.from_name("embedded")


def test_weights_are_small_safetensors():
    size = sum(os.path.getsize(os.path.join(EMBEDDED_DIR, f)) for f in os.listdir(EMBEDDED_DIR))
    assert size <= 25 * 2**20
    assert os.path.exists(os.path.join(EMBEDDED_DIR, "generator.safetensors"))


def test_generates_a_few_blocks_deterministically(pipe):
    a = pipe("a red circle and a blue square", 3, seed=1)
    b = pipe("a red circle and a blue square", 3, seed=1)
    c = pipe("a red circle and a blue square", 3, seed=2)
    assert a.frames.shape == (48, 64, 64, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert pipe.describe_prompt("a red ball flying left") == ["red", "ball", "left"]  # unknown words ignored


def test_camera_clock_gives_blocks_one_loop_apart_the_same_conditioning():
    """The clock is a vector per block of the world's 8-block loop, added to the timestep
    embedding: blocks 1 and 9 are conditioned alike, blocks 1 and 2 are not."""
    backbone = build_embedded(0)
    embedder = backbone.transformer.condition_embedder
    with torch.no_grad():
        backbone.clock.table.normal_()

    def timestep_embedding(frame):
        backbone.on_frame(frame)
        return embedder.time_embedder(embedder.timesteps_proj(torch.tensor([500.0])))

    block = 4  # latent frames
    assert torch.equal(timestep_embedding(1 * block), timestep_embedding(9 * block))
    assert not torch.allclose(timestep_embedding(1 * block), timestep_embedding(2 * block))


def test_zero_camera_clock_changes_nothing_and_sees_every_pass_of_a_stream():
    """Adding a (zero) clock to trained weights leaves a generation bit-identical, a
    nonzero one changes it (negative control), and every transformer pass of a stream
    (denoising, writing, compressing) tells the clock its block's absolute frame."""
    backbone = build_embedded(0, camera_clock=False)
    pipe = PackForcingPipeline(backbone)
    before = pipe("a red circle", 4, seed=1).frames
    clock = add_camera_clock(backbone)
    frames_seen = []
    backbone.on_frame = lambda frame: (frames_seen.append(frame), clock.at_frame(frame))
    assert np.array_equal(pipe("a red circle", 4, seed=1).frames, before)
    assert sorted(set(frames_seen)) == [0.0, 4.0, 8.0, 12.0]
    with torch.no_grad():
        clock.table.normal_(0, 0.5)
    assert not np.array_equal(pipe("a red circle", 4, seed=1).frames, before)
    with pytest.raises(ValueError, match="already has a camera clock"):
        add_camera_clock(backbone)
