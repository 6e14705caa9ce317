"""Colour binding: the object cover the binding probe scores, the prompt encoder that gives
each object's two words together, and the probes' own counting."""

import json

import numpy as np
import torch

from bench.binding import prompts
from packforcing.embedded import camera_model
from packforcing.embedded import panorama as world
from packforcing.embedded.camera_data import object_cover
from packforcing.embedded.vocab import TOKEN_ID, TinyTextEncoder, partners, tokenize


def _background(frames=4, size=8) -> torch.Tensor:
    colour = torch.tensor(world.BACKGROUND, dtype=torch.float32) / 127.5 - 1.0
    return colour.view(1, 3, 1, 1, 1).expand(1, 3, frames, size, size).clone()


def test_object_cover_is_the_share_of_a_cells_pixels_off_the_background():
    pixels = _background()
    assert object_cover(pixels).shape == (1, 1, 1, 2, 2) and object_cover(pixels).sum() == 0  # control
    pixels[0, 0, :2, :4, :4] = 1.0  # half the frames of the top-left 4x4x4 cell turn red
    pixels[0, 2, :, 4:, 4:] += 1 / 127.5  # a whole cell one level bluer (a soft edge's tint)
    cover = object_cover(pixels)[0, 0, 0]
    assert cover.tolist() == [[0.5, 0.0], [0.0, 1.0]]


def test_partners_pair_each_objects_colour_and_shape():
    ids = tokenize(["a white square and a red triangle, camera panning right", "a blue circle"])
    want = [[TOKEN_ID["square"], TOKEN_ID["white"], TOKEN_ID["triangle"], TOKEN_ID["red"]], [TOKEN_ID["circle"],
            TOKEN_ID["blue"], 0, 0]]
    assert partners(ids)[:, :4].tolist() == want
    assert partners(ids)[:, 4:].abs().sum() == 0  # pan, speed, motion, background and padding have none
    assert partners(ids[:, :3]).tolist() == [want[0][:2] + [0], want[1][:2] + [0]]  # odd lengths too


def test_the_bound_encoder_gives_a_shape_its_colour():
    torch.manual_seed(0)
    bound, bare = TinyTextEncoder(bind_objects=True), TinyTextEncoder()
    bare.load_state_dict(bound.state_dict())
    ids = tokenize(["a white square and a red triangle", "a red square and a white triangle"])
    # dense reference: each object word's input is its embedding + its partner's, by hand
    partner = torch.tensor([[7, 5, 8, 1], [7, 1, 8, 5]])
    assert ids[:, :4].tolist() == [[5, 7, 1, 8], [1, 7, 5, 8]] and partners(ids)[:, :4].tolist() == partner.tolist()
    x = bound.embed(ids) + bound.pos[:16]
    x[:, :4] += bound.embed(partner)
    want = bound.norm(bound.encoder(x, src_key_padding_mask=ids == 0)).masked_fill((ids == 0)[..., None], 0)
    torch.testing.assert_close(bound(ids), want)
    assert not torch.allclose(bare(ids), want, atol=1e-3)  # negative control: the bare encoder differs


def test_the_bound_encoder_is_saved_and_loaded(tmp_path):
    backbone = camera_model.build(0, bind_objects=True)
    camera_model.save(backbone, str(tmp_path / "bound"))
    loaded = camera_model.load(str(tmp_path / "bound"))
    ids = tokenize(["a green circle and a yellow square"])
    assert loaded.text_encoder.bind_objects
    torch.testing.assert_close(loaded.text_encoder(ids), backbone.text_encoder(ids))
    config = json.loads((tmp_path / "bound" / "config.json").read_text())
    del config["bind_objects"]  # weights saved before the choice existed read bare words
    (tmp_path / "bound" / "config.json").write_text(json.dumps(config))
    assert not camera_model.load(str(tmp_path / "bound")).text_encoder.bind_objects


def test_the_binding_probe_swaps_colours_between_shapes():
    scene = (("white", "square"), ("red", "triangle"))
    assert prompts(scene, "true") == "a white square and a red triangle, camera panning right"
    assert prompts(scene, "swapped") == "a red square and a white triangle, camera panning right"
    other = prompts(scene, "other")
    assert "white" not in other and "red" not in other and "square" in other and "triangle" in other


def test_pair_counts_tell_asked_from_swapped_pairs():
    from bench.binding import pair_counts

    asked = (("white", "square"), ("red", "triangle"))
    xs = world.positions(["right"] * 4)
    truth = world.render(world.PanoramaSpec(asked, "right", 7), xs)
    crossed = world.render(world.PanoramaSpec((("red", "square"), ("white", "triangle")), "right", 7), xs)
    a, s = pair_counts(truth, asked)
    assert a > 20 and s == 0
    a, s = pair_counts(crossed, asked)  # the colours on each other's shapes
    assert a == 0 and s > 20


def test_history_given_whole_is_the_world_through_the_codec():
    """bench/history.py's first loop is the world: with every block given, the frames are
    the world's through the codec, so each colour's count matches the world's within the
    codec's loss (hand-checked: white 306 for 300, red 59 for 63)."""
    from bench.history import LOOP, colour_pixels, run
    from packforcing.camera import CameraPath

    torch.manual_seed(0)
    backbone = camera_model.build(0)  # random weights: nothing is sampled
    prompt = "a white square and a red triangle"
    spec = world.spec_from_prompt(prompt, 1000)
    xs = world.positions(CameraPath.parse(f"right:{2 * LOOP}").directions(2 * LOOP, 1.0))
    truth = world.render(spec, xs)
    latent = backbone.codec.encode(torch.from_numpy(truth).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0)
    frames = run(backbone, backbone.default_config, prompt, 1000, 2 * LOOP, latent)
    assert frames.shape == truth.shape
    got, want = colour_pixels(frames, ["white", "red"]), colour_pixels(truth, ["white", "red"])
    assert abs(got["white"] - want["white"]) < 0.1 * want["white"]
    assert abs(got["red"] - want["red"]) < 0.15 * want["red"]
    shifted = run(backbone, backbone.default_config, prompt, 1000, 2 * LOOP, latent.roll(8, dims=-1))
    assert np.abs(shifted.astype(int) - frames.astype(int)).mean() > 5  # control: the latent is what is shown


def test_history_without_a_prompt_denoises_with_zeros_and_writes_with_the_prompt(monkeypatch):
    from bench.history import LOOP, run
    from packforcing.sampler import PackForcingSampler

    seen = {"denoise": [], "write": []}
    denoise, write = PackForcingSampler.denoise_block, PackForcingSampler.write_block

    def spy_denoise(self, i, text, *a, **k):
        seen["denoise"].append(float(text.abs().sum()))
        return denoise(self, i, text, *a, **k)

    def spy_write(self, i, x0, text, *a, **k):
        seen["write"].append(float(text.abs().sum()))
        return write(self, i, x0, text, *a, **k)

    monkeypatch.setattr(PackForcingSampler, "denoise_block", spy_denoise)
    monkeypatch.setattr(PackForcingSampler, "write_block", spy_write)
    torch.manual_seed(0)
    backbone = camera_model.build(0)
    config = backbone.default_config.replace(timesteps=(1000.0,))
    latent = torch.zeros(1, 16, 2 * LOOP * config.block_frames, 16, 16)
    run(backbone, config, "a red circle", 0, 2 * LOOP - 2, latent, prompted=False)
    assert seen["denoise"] == [0.0, 0.0]  # the two sampled blocks
    assert len(seen["write"]) == 2 * LOOP and min(seen["write"]) > 0
    seen["denoise"].clear()
    run(backbone, config, "a red circle", 0, 2 * LOOP - 1, latent)  # control: prompted
    assert len(seen["denoise"]) == 1 and seen["denoise"][0] > 0


def test_history_recall_is_averaged_over_seeds_per_prompt_and_colour():
    from bench.history import mean_recall

    rows = [{"prompt": "p", "world": {"red": 100.0, "blue": 50.0}, "world_history_red_recall": 1.0,
             "world_history_blue_recall": 0.2},
            {"prompt": "p", "world": {"red": 90.0, "blue": 0.0}, "world_history_red_recall": 0.5,
             "world_history_blue_recall": None},  # a layout whose second loop shows no blue
            {"prompt": "q", "world": {"red": 80.0}, "world_history_red_recall": 0.0}]
    assert mean_recall(rows) == {"p: red": 0.75, "p: blue": 0.2, "q: red": 0.0}


def test_sampled_binding_scores_the_world_through_the_codec_as_bound():
    from bench.binding import sampled_binding
    from packforcing.pipeline import PackForcingPipeline

    torch.manual_seed(0)
    pipe = PackForcingPipeline(camera_model.build(0))  # random weights: the world's count is what is checked
    out = sampled_binding(pipe, [(("white", "square"), ("red", "triangle"))], 2024)
    assert out["world_asked"] >= 10 and out["world_swapped"] == 0 and out["world_pair_accuracy"] == 1.0
    assert set(out) >= {"model_asked", "model_swapped", "model_pair_accuracy"}
