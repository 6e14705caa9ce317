"""The embedded model's world: scene, vocabulary, codec and metrics (deterministic, seeded)."""

import dataclasses
import random

import numpy as np
import pytest
import torch
from helpers import psnr

from packforcing.embedded import metrics, vocab
from packforcing.embedded.codec import WorldCodec
from packforcing.embedded.world import (
    FPS,
    LOOP_FRAMES,
    LOOP_SECONDS,
    VIEW,
    WorldSpec,
    camera_x,
    panorama,
    prompt_for,
    render_clip,
    sample_spec,
    scene_width,
    spec_from_prompt,
    visible_objects,
)
from packforcing.video import to_uint8

SPEC = WorldSpec(objects=(("red", "circle"), ("blue", "square")), seed=5)
SPEC3 = WorldSpec(objects=(("yellow", "triangle"), ("white", "circle"), ("green", "square")), pan="left",
                  speed="fast", motion="bouncing", background="forest", seed=9)


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def codec():
    return WorldCodec()


@pytest.fixture(scope="module")
def clips():
    """Two loops of each test spec plus random training specs (ground truth)."""
    return {spec: render_clip(spec, 0, 2 * LOOP_FRAMES) for spec in (SPEC, SPEC3)}


# ----------------------------------------------------------------------------- scene


def test_geometry_constants():
    assert FPS == 16 and VIEW == 64
    assert LOOP_FRAMES == LOOP_SECONDS * FPS and LOOP_FRAMES % 16 == 0  # whole generation blocks
    assert 4 <= LOOP_SECONDS <= 8
    for speed in vocab.SPEEDS:
        spec = dataclasses.replace(SPEC, speed=speed)
        assert scene_width(spec) >= 2 * VIEW


def test_render_deterministic_and_offsets(clips):
    clip = clips[SPEC3]
    assert clip.shape == (2 * LOOP_FRAMES, 64, 64, 3) and clip.dtype == np.uint8
    assert np.array_equal(render_clip(SPEC3, 0, 40), clip[:40])
    assert np.array_equal(render_clip(SPEC3, 37, 20), clip[37:57])
    assert not np.array_equal(render_clip(dataclasses.replace(SPEC3, seed=10), 0, 40), clip[:40])


@pytest.mark.parametrize("seed", range(6))
def test_camera_returns_and_scene_agrees(seed):
    spec = sample_spec(random.Random(seed))
    frames = np.arange(0, 3 * LOOP_FRAMES, 7)
    xs = camera_x(spec, frames)
    assert np.all((xs >= 0) & (xs < scene_width(spec)))
    assert np.array_equal(camera_x(spec, frames + LOOP_FRAMES), xs)
    # within a loop the camera never shows the same place twice
    assert len(set(camera_x(spec, np.arange(LOOP_FRAMES)).tolist())) == LOOP_FRAMES
    a, b = render_clip(spec, 0, 24), render_clip(spec, LOOP_FRAMES + 0, 24)
    assert np.array_equal(a, b)
    # every object is fully in view at some frame of a loop
    whole = {(c, s) for f in range(LOOP_FRAMES) for c, s, x, y in visible_objects(spec, f) if 0 <= x and x + 24 <= VIEW}
    assert whole == set(spec.objects)


def test_panorama_and_background_are_dim():
    from packforcing.embedded.world import scene_layout

    pano = panorama(SPEC3)
    assert pano.shape == (64, scene_width(SPEC3), 3)
    assert (metrics.colour_map(pano[None]) >= 0).sum() > 0  # objects: bright palette colours
    for background in vocab.BACKGROUNDS:  # the background never reads as an object
        assert scene_layout(dataclasses.replace(SPEC3, background=background)).background.max() < metrics.SALIENT


def test_sample_spec_and_prompt_round_trip():
    rng = random.Random(0)
    for _ in range(50):
        spec = sample_spec(rng)
        again = spec_from_prompt(prompt_for(spec), spec.seed)
        assert again == spec
    assert sample_spec(3) == sample_spec(random.Random(3))


def test_spec_validation():
    with pytest.raises(ValueError, match="purple"):
        WorldSpec(objects=(("purple", "circle"),))
    with pytest.raises(ValueError, match="speed"):
        WorldSpec(speed="warp")
    with pytest.raises(ValueError):
        WorldSpec(objects=())


# ----------------------------------------------------------------------------- vocabulary


def test_parse_prompt():
    fields, words = vocab.parse_prompt("A red circle and a BLUE square, panning left quickly under the moon!")
    assert fields["objects"] == (("red", "circle"), ("blue", "square"))
    assert (fields["pan"], fields["speed"], fields["motion"], fields["background"]) == ("left", "fast", "still",
                                                                                        "night")
    assert words == ["red", "circle", "blue", "square", "left", "quickly"]
    fields, _ = vocab.parse_prompt("red and yellow balls bouncing at dusk")
    assert fields["objects"] == (("red", "circle"), ("yellow", "circle"))
    assert fields["motion"] == "bouncing" and fields["background"] == "dusk"
    assert vocab.parse_prompt("green")[0]["objects"] == (("green", vocab.DEFAULT_SHAPE),)
    assert vocab.parse_prompt("triangles")[0]["objects"] == ((vocab.DEFAULT_COLOUR, "triangle"),)
    assert vocab.describe_prompt("a shiny red box") == ["red", "box"]


def test_validate_prompt():
    for bad in ("", "   ", "a cat on a mat", "fast left at night"):
        with pytest.raises(ValueError, match="Known words: colours: red, green, blue, yellow, white"):
            vocab.validate_prompt(bad)
    with pytest.raises(ValueError, match="at most 4"):
        vocab.validate_prompt("red circle blue circle green circle white circle yellow circle")
    vocab.validate_prompt("a red circle")
    with pytest.raises(ValueError):
        spec_from_prompt("nothing known here")


def test_tokenize_is_canonical():
    a = vocab.tokenize("a red ball and a blue box, quickly panning left")
    b = vocab.tokenize("red circle blue square left fast still night")
    assert a.dtype == torch.long and a.shape == (16,) and torch.equal(a, b)
    assert (a[:8] > 0).all() and (a[8:] == 0).all()
    assert not torch.equal(a, vocab.tokenize("blue square red circle left fast"))  # order = object order
    assert vocab.tokenize(["red circle", "green"]).shape == (2, 16)
    assert int(vocab.tokenize("red circle").max()) < vocab.VOCAB_SIZE


def test_text_encoder():
    torch.manual_seed(0)
    enc = vocab.TinyTextEncoder(text_dim=64)
    ids = vocab.tokenize(["red circle", "red circle blue square yellow triangle bouncing"])
    out = enc(ids)
    assert out.shape == (2, 16, 64) and torch.isfinite(out).all()
    assert (out[ids == 0] == 0).all() and (out[ids != 0].abs().sum(-1) > 0).all()
    assert not torch.allclose(out[0, 0], out[1, 0]) or not torch.allclose(out[0, 1], out[1, 1])
    assert torch.isfinite(enc(torch.zeros(1, 16, dtype=torch.long))).all()  # all padding: zeros, no NaN
    out.sum().backward()
    assert enc.embed.weight.grad is not None


# ----------------------------------------------------------------------------- codec


def test_codec_round_trip_and_scale(codec, clips):
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor, codec.first_frame_alone) == (16, 4, 4,
                                                                                                             False)
    pixels = torch.cat([to_pixels(c) for c in clips.values()])
    latent = codec.encode(pixels)
    assert latent.shape == (2, 16, 2 * LOOP_FRAMES // 4, 16, 16)
    std = latent.std(dim=(0, 2, 3, 4))
    assert 0.75 < latent.std() < 1.3 and (std > 0.5).all() and (std < 2.0).all()
    assert latent.mean().abs() < 0.3
    recon = codec.decode(latent)
    assert recon.shape == pixels.shape and recon.min() >= -1 and recon.max() <= 1
    assert psnr(recon, pixels) > 24.0
    # a fixed linear projection: encoding the reconstruction gives the same latent back
    assert torch.allclose(codec.encode(codec.decode(latent * 0.1)), latent * 0.1, atol=1e-4)


def test_codec_basis_orthonormal(codec):
    b = codec.basis
    assert b.shape == (16, 192) and torch.allclose(b @ b.T, torch.eye(16), atol=1e-5)


def test_codec_streaming_equals_full_decode(codec):
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 16, 10, 16, 16, generator=g)
    full = codec.decode(latent)
    dec = codec.stream_decoder()
    parts = [dec.decode_next(latent[:, :, a:b]) for a, b in ((0, 4), (4, 5), (5, 10))]
    assert [p.shape[2] for p in parts] == [16, 4, 20]
    assert torch.equal(torch.cat(parts, dim=2), full)


def test_codec_differentiable_and_general_shapes(codec):
    x = (torch.rand(1, 3, 8, 16, 16) * 2 - 1).requires_grad_(True)  # LR branch: pooled clip
    z = codec.encode(x)
    assert z.shape == (1, 16, 2, 4, 4)
    codec.decode(z * 0.5).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert codec.encode(torch.zeros(1, 3, 6, 8, 8)).shape == (1, 16, 2, 2, 2)  # T padded to 8
    assert codec.encode(x.detach().to(torch.bfloat16)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="multiples of 4"):
        codec.encode(torch.zeros(1, 3, 4, 10, 12))


# ----------------------------------------------------------------------------- metrics


def test_metrics_ground_truth_scores_one(codec, clips):
    for spec, clip in clips.items():
        for frames in (clip, to_uint8(codec.decode(codec.encode(to_pixels(clip))))):
            m = metrics.evaluate(frames, spec)
            assert m["faithfulness"] == 1.0 and m["word_accuracy"] == 1.0, m
            assert m["revisit_consistency"] > 0.99 and m["revisit_contrast"] > 0.9
            assert m["drift_first"] == m["drift_last"] == 1.0 and len(m["drift"]) == 2
            assert m["pan_accuracy"] > 0.9 and m["pan_speed"] == m["pan_expected"]


def test_metrics_detect_wrong_colour(clips):
    spec = SPEC
    wrong = dataclasses.replace(spec, objects=(("green", "circle"), ("blue", "square")))
    m = metrics.evaluate(render_clip(wrong, 0, 2 * LOOP_FRAMES), spec)
    assert m["faithfulness"] < 0.5 and m["word_accuracy"] <= 0.75
    assert m["missing"] == ["red circle"] and m["unexpected"] == ["green circle"]
    extra = dataclasses.replace(spec, objects=spec.objects + (("white", "triangle"),))
    assert metrics.faithfulness(render_clip(extra, 0, LOOP_FRAMES), spec)["faithfulness"] < 0.7


def test_metrics_detect_changed_revisit(clips):
    spec, clip = SPEC3, clips[SPEC3]
    L = LOOP_FRAMES
    assert metrics.revisit_consistency(clip, spec)["revisit_consistency"] == 1.0
    other = clip.copy()  # the second loop shows another layout
    other[L:] = render_clip(dataclasses.replace(spec, seed=spec.seed + 1), L, L)
    r = metrics.revisit_consistency(other, spec)
    assert r["revisit_consistency"] < 0.2 and r["revisit_contrast"] < 0.6
    recoloured = clip.copy()  # one object changes colour when the camera comes back
    wrong = dataclasses.replace(spec, objects=(("red", "triangle"),) + spec.objects[1:])
    recoloured[L:] = render_clip(wrong, L, L)
    assert metrics.revisit_consistency(recoloured, spec)["revisit_consistency"] < 0.85
    frozen = np.repeat(clip[:1], 2 * L, axis=0)  # a frozen video "matches" itself but has no contrast
    r = metrics.revisit_consistency(frozen, spec)
    assert r["revisit_consistency"] == 1.0 and r["revisit_contrast"] == 0.0
    assert metrics.revisit_consistency(clip[: L - 1], spec)["revisit_consistency"] is None


def test_metrics_drift_and_pan(clips):
    spec, clip = SPEC, clips[SPEC]
    L = LOOP_FRAMES
    late = clip.copy()  # the second loop forgets the prompt's colour
    late[L:] = render_clip(dataclasses.replace(spec, objects=(("red", "circle"), ("yellow", "square"))), L, L)
    d = metrics.drift(late, spec)
    assert [round(s["faithfulness"], 3) for s in d["segments"]] == [1.0, 0.333]
    assert d["drop"] > 0.5
    assert len(metrics.drift(late, spec, segments=4)["segments"]) == 4
    reverse = render_clip(dataclasses.replace(spec, pan="left"), 0, 64)
    assert metrics.pan_accuracy(reverse, spec)["pan_accuracy"] < 0.1
    with pytest.raises(ValueError, match="uint8"):
        metrics.evaluate(clip.astype(np.float32), spec)


def test_a_camera_path_has_one_direction_per_block():
    from packforcing.embedded.camera_data import sample_path

    for blocks in (2, 3, 5, 12):
        for seed in range(20):
            path = sample_path(random.Random(seed), blocks, {"outback": 1.0})
            assert len(path) == blocks and path[0] in ("left", "right"), (blocks, seed)
    rng = random.Random(0)
    turns = [sum(a != b for a, b in zip(p, p[1:])) for p in (sample_path(rng, 12, {"outback": 1.0}) for _ in range(20))]
    assert set(turns) == {1}  # an out-and-back turns once (a control on the kind drawn)
