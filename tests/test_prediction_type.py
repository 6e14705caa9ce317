"""A model that predicts the clean latent ("sample") is sampled through its velocity
(x - x0) / sigma; a velocity model that cannot reach part of the latent leaves that
part's starting noise in the sample."""

import pytest
import torch

from packforcing.backbone import SAMPLE_SIGMA_FLOOR, Backbone
from packforcing.backbones.tiny import build_tiny_random
from packforcing.config import PackForcingConfig
from packforcing.sampler import PackForcingSampler
from packforcing.scheduler import FewStepScheduler

SHAPE = (2, 4, 1, 4, 4)


def _backbone(prediction_type: str) -> Backbone:
    return Backbone(name="t", transformer=torch.nn.Linear(1, 1), codec=None, encode_prompt=None, width=16, height=16,
                    prediction_type=prediction_type)


def test_a_clean_latent_becomes_the_flow_velocity():
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
    sigma = torch.tensor([0.7, 0.2])
    xt = (1 - sigma.view(-1, 1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1, 1) * noise
    v = _backbone("sample").velocity(xt, x0, sigma * 1000)
    torch.testing.assert_close(v, noise - x0, atol=1e-5, rtol=1e-5)  # the rectified-flow target
    assert torch.equal(_backbone("flow_prediction").velocity(xt, x0, sigma * 1000), x0)  # passed through


def test_below_the_floor_the_velocity_divides_by_the_floor():
    xt, x0 = torch.ones(SHAPE), torch.zeros(SHAPE)
    v = _backbone("sample").velocity(xt, x0, torch.tensor([0.01, 0.0]) * 1000)
    torch.testing.assert_close(v, torch.full(SHAPE, 1 / SAMPLE_SIGMA_FLOOR))
    assert SAMPLE_SIGMA_FLOOR == 0.05


def test_an_unknown_prediction_type_is_named():
    with pytest.raises(ValueError, match="'epsilon'"):
        _backbone("epsilon")


def _sample(predict, seed=1):
    """Euler steps of the camera model's schedule from noise, `predict(x, sigma)` giving the velocity."""
    config = PackForcingConfig(timesteps=tuple(1000.0 * (1 - i / 6) for i in range(6)), shift=2.0)
    steps = FewStepScheduler(config.sigmas, 1000, "euler")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    for i, sigma in enumerate(steps.sigmas):
        x, x0 = steps.step(x, predict(x, sigma), i)
    return x0


def test_a_sample_prediction_leaves_no_noise_where_a_blind_velocity_does():
    target = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    sample = _backbone("sample")
    out = _sample(lambda x, s: sample.velocity(x, target, torch.tensor([s * 1000] * 2)))
    torch.testing.assert_close(out, target, atol=1e-5, rtol=1e-5)
    # a velocity model blind to half the channels (a patch wider than the model) predicts
    # the best it can there, -E[x0] = 0, and that half keeps its starting noise
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    blind = torch.ones(SHAPE)
    blind[:, 2:] = 0

    def velocity(x, s):
        return blind * (x - target) / s

    out = _sample(velocity)
    torch.testing.assert_close(out[:, :2], target[:, :2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 2:], start[:, 2:], atol=1e-5, rtol=1e-5)


def test_the_sampler_turns_only_denoising_passes_into_velocities():
    backbone = build_tiny_random(0, width=64, height=64)
    # the HR compressor's pass reads its own tokens, not a latent: no velocity to make of it
    config = backbone.default_config.replace(timesteps=(1000.0, 500.0), compression="hr")
    text = backbone.encode_prompt("a red circle")
    outs = {}
    for kind in ("flow_prediction", "sample"):
        backbone.prediction_type = kind
        sampler = PackForcingSampler(backbone, config, seed=0)
        sampler.begin_block(0)
        x = torch.randn(sampler.latent_shape, generator=torch.Generator().manual_seed(2))
        outs[kind] = (x, sampler.forward(x, 400.0, text))
        # a whole stream runs: write and compressed passes keep the transformer's output
        calls = []
        velocity = backbone.velocity
        backbone.velocity = lambda *a, calls=calls, velocity=velocity: calls.append(1) or velocity(*a)
        events = list(sampler.stream("a red circle", num_blocks=5, model_name="tiny"))
        del backbone.velocity
        assert len(calls) == 5 * 2  # 5 blocks x 2 denoising steps, no write or compressed pass
        assert sum(type(e).__name__ == "Block" for e in events) == 5
        assert any(e.mid_bank for e in events if type(e).__name__ == "Block")  # a block was compressed
    x, raw = outs["flow_prediction"]
    torch.testing.assert_close(outs["sample"][1], (x - raw) / 0.4, atol=1e-4, rtol=1e-4)
