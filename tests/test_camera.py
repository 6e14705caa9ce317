"""Camera steering: paths, the sampler's per-block camera hook, the trace field, the panel."""

import dataclasses
import math

import pytest
import torch

from packforcing.backbones.tiny import build_tiny_random
from packforcing.camera import CameraPath
from packforcing.config import PackForcingConfig
from packforcing.controls import LiveControls
from packforcing.events import Block, block_events, event_from_dict, event_to_dict
from packforcing.pipeline import PackForcingPipeline
from packforcing.sampler import PackForcingSampler


def test_path_parses_and_says_the_direction_at_each_time():
    path = CameraPath.parse("right:8, left:4,still:0.5")
    assert path.segments == (("right", 8.0), ("left", 4.0), ("still", 0.5))
    # hand-worked: [0, 8) right, [8, 12) left, [12, 12.5) still, then the last holds
    assert [path.direction_at(t) for t in (0, 7.99, 8, 11.5, 12, 40)] == [
        "right",
        "right",
        "left",
        "left",
        "still",
        "still",
    ]
    assert path.directions(3, 4.0) == ["right", "right", "left"]
    assert str(path) == "right:8,left:4,still:0.5"


@pytest.mark.parametrize(
    "text, message",
    [
        ("up:3", "camera segment up:3: direction 'up' is not allowed; choose one of left, still, right"),
        ("right:8,left", "camera segment 'left' is not direction:seconds"),
        ("right:x", "camera segment 'right:x' is not direction:seconds"),
        ("right:0", "camera segment right:0: seconds must be > 0"),
        ("", "camera segment '' is not direction:seconds"),
    ],
)
def test_bad_segments_are_named_with_what_is_allowed(text, message):
    with pytest.raises(ValueError) as e:
        CameraPath.parse(text)
    assert message in str(e.value)


class Recorder:
    """A stand-in camera: records what the sampler asks, reports the block's direction."""

    def __init__(self):
        self.calls = []

    def __call__(self, index, direction, prompt):
        self.calls.append((index, direction, prompt))
        return {
            "direction": direction or "default",
            "x": float(index),
            "end": float(index),
            "period": None,
            "view": 1.0,
        }


@pytest.fixture(scope="module")
def backbone():
    return build_tiny_random(width=64, height=64)


def _stream(backbone, camera=None, controls=None, on_block=None, blocks=5):
    rec = Recorder()
    steered = dataclasses.replace(backbone, move_camera=rec)
    sampler = PackForcingSampler(steered, PackForcingConfig(top_k=1, mid_capacity=2), seed=0)
    seconds_per_block = sampler.geometry()["seconds_per_block"]
    events = []
    for event in sampler.stream("p", blocks, "tiny-random", camera=camera, controls=controls):
        events.append(event)
        if isinstance(event, Block) and on_block:
            on_block(event)
    return rec, block_events(events), seconds_per_block


def test_the_path_reaches_the_model_block_by_block_and_the_trace_records_it(backbone):
    rec, blocks, spb = _stream(backbone, camera=CameraPath.parse(f"right:{2 * 1.0:g},still:1,left:9"))
    assert spb == 1.0  # tiny: 4 latent frames x 4 pixel frames at 16 fps
    assert [c[1] for c in rec.calls] == ["right", "right", "still", "left", "left"]
    assert [c[0] for c in rec.calls] == [0, 1, 2, 3, 4] and {c[2] for c in rec.calls} == {"p"}
    assert [b.camera["direction"] for b in blocks] == ["right", "right", "still", "left", "left"]
    again = event_from_dict(event_to_dict(blocks[3]))
    assert again.camera == blocks[3].camera


def test_without_a_path_the_model_decides_and_live_steering_wins_from_the_next_block(backbone):
    controls = LiveControls()

    def steer(event):
        if event.block == 1:
            controls.steer("left")

    rec, _, _ = _stream(backbone, camera=CameraPath.parse("right:100"), controls=controls, on_block=steer)
    assert [c[1] for c in rec.calls] == ["right", "right", "left", "left", "left"]
    rec, _, _ = _stream(backbone)
    assert [c[1] for c in rec.calls] == [None] * 5  # the model's default for the prompt


def test_a_model_without_a_camera_records_none_and_refuses_a_path(backbone):
    sampler = PackForcingSampler(backbone, PackForcingConfig(), seed=0)
    blocks = block_events(list(sampler.stream("p", 2, "tiny-random", camera=CameraPath.parse("left:1"))))
    assert [b.camera for b in blocks] == [None, None]
    pipe = PackForcingPipeline(backbone)
    with pytest.raises(ValueError, match="model 'tiny-random' has no camera to steer"):
        pipe.camera_path("right:8")
    assert pipe.camera_path(None) is None


def test_place_embedding_of_a_hand_worked_token():
    from packforcing.embedded.camera_model import HARMONICS, PlaceEmbedding

    place = PlaceEmbedding(8, {64: (4, 4, 4), 8: (2, 2, 2)})
    xs = torch.zeros(1, 32)
    xs[0, 16:] = 100 + 4 * torch.arange(16)  # block 1 pans right from x = 100
    place.set_clip(xs)
    place.at_frame(4.0)  # latent frame 4 = block 1
    got = place.features(1, 64, "cpu", torch.float32)
    # token (f=1, h=2, w=3): frames 4..7 -> camera 116, 120, 124, 128 -> mean 122; column 3's centre: 56 px
    x = 122 + 56
    k = torch.arange(1, HARMONICS + 1, dtype=torch.float64)
    phase = 2 * math.pi * k * x / 512
    want = place.proj(torch.cat([phase.cos(), phase.sin()]).float())
    assert torch.allclose(got[0, 1 * 16 + 2 * 4 + 3], want, atol=1e-5)
    # compressed grid (2 x 2 x 2): token (f=0, h=1, w=0): frames 0..7 -> mean 114; column 0's centre 16 px
    phase = 2 * math.pi * k * (114 + 16) / 512
    want = place.proj(torch.cat([phase.cos(), phase.sin()]).float())
    assert torch.allclose(place.features(1, 8, "cpu", torch.float32)[0, 2], want, atol=1e-5)
    xs[0, 16:] += 512  # one panorama further: the same place
    place.set_clip(xs)
    assert torch.allclose(place.features(1, 64, "cpu", torch.float32), got, atol=1e-4)
    with pytest.raises(RuntimeError, match="a pass of 10 tokens has no known grid"):
        place.features(1, 10, "cpu", torch.float32)


def test_a_run_starts_its_camera_afresh_after_a_training_batch():
    """Block 0 of a run drops whatever clip was set before (a probe's batch of 3), then
    each block extends the path: right from x = 0, 4 px a frame (world.positions)."""
    from packforcing.embedded.camera_model import PlaceEmbedding

    place = PlaceEmbedding(8, {64: (4, 4, 4)})
    place.set_clip(torch.zeros(3, 48))
    place.move(0, "right", "a red circle")
    place.move(1, "left", "a red circle")
    assert place.xs.shape == (1, 32)
    assert place.xs[0, :3].tolist() == [0.0, 4.0, 8.0] and place.xs[0, 15].item() == 60.0
    assert place.xs[0, 16].item() == 64.0 and place.xs[0, 17].item() == 60.0  # the turn, one frame on


def test_revisit_sources_of_the_out_and_back_path():
    from packforcing.embedded.camera_data import is_mid_revisit, revisit_sources
    from packforcing.embedded.panorama import positions

    rows = revisit_sources(positions(["right"] * 8 + ["left"] * 8))
    # hand-worked: block 12 films x 248..188 (centre 250); block 3 filmed 192..252 (centre 254)
    assert rows[12]["mid"] == [3] and is_mid_revisit(rows[12])
    assert rows[8]["recent"] == [7] and not is_mid_revisit(rows[8])  # the turn: the recent block holds it
    assert rows[15]["sink"] == [0]  # back at the start: the sink holds it
    assert not any(is_mid_revisit(r) for r in revisit_sources(positions(["right"] * 8)))  # no place seen twice


def test_the_studio_buttons_steer_their_own_session_only():
    from types import SimpleNamespace

    from app import sessions
    from app.live import Live, steerer
    from packforcing.controls import LiveControls

    camera_model = SimpleNamespace(name="camera-model", has_camera=True)
    mine, other = Live(LiveControls(), camera_model), Live(LiveControls(), camera_model)
    sessions.hold_live("session-a", mine), sessions.hold_live("session-b", other)
    assert steerer("left")(SimpleNamespace(session_hash="session-a")) == "Steering left from the next block."
    assert mine.controls.poll() == (None, "left")
    assert other.controls.poll() == (None, None)  # another browser's run is not steered
    assert "nothing is streaming" in steerer("still")(SimpleNamespace(session_hash="no-run"))
    sessions.release_live("session-a", mine), sessions.release_live("session-b", other)
    assert "nothing is streaming" in steerer("left")(SimpleNamespace(session_hash="session-a"))  # the run ended
