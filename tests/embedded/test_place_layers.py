"""The place embedding in later transformer blocks (camera_model.PlaceEmbedding, layers > 1):
each block adds its own projection of the same harmonics, a model grown from a
first-block-only run starts with that run's outputs, and the choice survives save/load."""

import json
import math
import random

import pytest
import torch

from packforcing.embedded import camera_model
from packforcing.embedded.camera_data import make_clips
from packforcing.embedded.camera_model import HARMONICS, PlaceEmbedding
from packforcing.embedded.teacher import clip_loss
from packforcing.embedded.train import Run, TrainConfig, encode_texts

RECIPE = {"batch": 1, "blocks": 6, "paths": {"outback": 1.0}, "threads": 1, "switch_prob": 0.0, "recon_weight": 0.0}


def _harmonics(x: float) -> torch.Tensor:
    k = torch.arange(1, HARMONICS + 1, dtype=torch.float64)
    phase = 2 * math.pi * k * x / 512
    return torch.cat([phase.cos(), phase.sin()]).float()


def test_each_later_block_adds_its_own_projection_of_the_place():
    place = PlaceEmbedding(8, {64: (4, 4, 4)}, layers=3)
    assert all(float(p.abs().sum()) == 0 for p in place.later.parameters())  # grown blocks start at zero
    torch.manual_seed(1)
    for linear in place.later:
        torch.nn.init.normal_(linear.weight)
        torch.nn.init.normal_(linear.bias)
    xs = 100 + 4 * torch.arange(16.0)  # block 0 pans right from x = 100
    place.set_clip(xs[None])
    place.at_frame(0.0)
    hidden = torch.randn(1, 64, 8)
    # token (f=2, h=1, w=0): frames 8..11 -> camera 132, 136, 140, 144 -> mean 138; column 0's centre 8 px
    token = 2 * 16 + 1 * 4 + 0
    for layer, proj in ((0, place.proj), (1, place.later[0]), (2, place.later[1])):
        out = place.input_hook(layer)(None, (hidden, "kept"))
        assert out[1] == "kept"
        want = hidden[0, token] + proj(_harmonics(138 + 8))
        torch.testing.assert_close(out[0][0, token], want, rtol=1e-5, atol=1e-5)
    # negative control: the layers differ from one another
    assert not torch.allclose(place.input_hook(1)(None, (hidden,))[0], place.input_hook(2)(None, (hidden,))[0])
    with pytest.raises(ValueError, match="layers=0"):
        PlaceEmbedding(8, {64: (4, 4, 4)}, layers=0)


def test_place_layers_out_of_range_is_named():
    with pytest.raises(ValueError, match="place_layers=5: allowed 1 to 4"):
        camera_model.build(0, place_layers=5)


def _loss(run: Run, seed: int = 3) -> float:
    clips = make_clips(random.Random(seed), 1, 6, run.backbone.codec, paths={"outback": 1.0})
    with torch.no_grad():
        out = clip_loss(run.sampler, clips, encode_texts(run.backbone, clips), run.tc.teacher,
                        torch.Generator().manual_seed(seed), run.head)
    return out.total.item()


def test_a_run_grown_from_a_first_block_run_starts_with_its_outputs(tmp_path):
    from packforcing.embedded.train import main

    (tmp_path / "a.json").write_text(json.dumps(RECIPE))
    main(["--recipe", str(tmp_path / "a.json"), "--out", str(tmp_path / "a"), "--max-steps", "1"])
    state = torch.load(tmp_path / "a" / "state.pt", weights_only=True)
    del state["names"]  # as a state saved before names were kept
    torch.save(state, tmp_path / "a" / "state.pt")
    first = Run(TrainConfig.from_dict({**RECIPE, "init": str(tmp_path / "a")}), str(tmp_path / "b"))
    grown = Run(TrainConfig.from_dict({**RECIPE, "init": str(tmp_path / "a"), "place_layers": 4}), str(tmp_path / "c"))
    assert len(grown.params) == len(first.params) + 6  # three Linear layers: weight and bias each
    assert _loss(grown) == pytest.approx(_loss(first), rel=1e-6)
    with torch.no_grad():  # negative control: a later block's place projection changes the loss
        bias = torch.linspace(-1, 1, grown.backbone.place.later[2].bias.numel())  # not constant: norms remove that
        grown.backbone.place.later[2].bias.copy_(bias)
        grown.ema[grown.names.index("place.later.2.bias")].copy_(bias)  # what save() writes
    assert abs(_loss(grown) - _loss(first)) > 1e-4
    grown.save()
    loaded = camera_model.load(str(tmp_path / "c"))
    assert len(loaded.place.later) == 3 and float(loaded.place.later[2].bias[0]) == pytest.approx(-1.0)
    assert json.loads((tmp_path / "c" / "config.json").read_text())["place_layers"] == 4
    # a grown run's state keeps its names; a first-block run cannot start from it
    with pytest.raises(ValueError, match="do not match"):
        Run(TrainConfig.from_dict({**RECIPE, "init": str(tmp_path / "c")}), str(tmp_path / "d"))
