"""The shipped embedded model loads from assets/ and generates deterministically on a CPU."""

import os

import numpy as np
import pytest

from packforcing.pipeline import EMBEDDED_DIR, PackForcingPipeline


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
