"""The few-step update (scheduler.py) against values worked by hand."""

import pytest
import torch

from packforcing.config import PackForcingConfig
from packforcing.scheduler import FewStepScheduler


def t(value: float, dtype=torch.float32) -> torch.Tensor:
    return torch.full((1, 2), value, dtype=dtype)


def test_shifted_levels_and_timesteps_from_the_config():
    # s' = shift*s / (1 + (shift-1)*s): s = 1 stays 1, s = 0.5 -> 2.5 / 3 with shift 5
    steps = FewStepScheduler.from_config(PackForcingConfig(timesteps=(1000.0, 500.0), shift=5.0))
    assert steps.sigmas == pytest.approx((1.0, 2.5 / 3))
    assert (steps.timestep(0), steps.timestep(1)) == pytest.approx((1000.0, 2500.0 / 3))
    assert steps.step_rule == "renoise" and not steps.guided


def test_renoise_step_hand_worked():
    steps = FewStepScheduler((1.0, 0.5), 1000, "renoise")
    # x0 = x - sigma v = 2 - 1.5 = 0.5; next = (1 - 0.5) x0 + 0.5 noise = 0.25 + 0.5 = 0.75
    x, x0 = steps.step(t(2.0), t(1.5), 0, noise=t(1.0))
    assert torch.equal(x0, t(0.5)) and torch.equal(x, t(0.75))
    # the last step: x0 = 0.75 - 0.5 * 0.5 = 0.5, no next input and no noise needed
    x, x0 = steps.step(t(0.75), t(0.5), 1)
    assert x is None and torch.equal(x0, t(0.5))
    assert [steps.needs_noise(i) for i in range(2)] == [True, False] and not steps.guided  # guidance off by default
    with pytest.raises(ValueError, match="step 0 re-noises to sigma 0.5: pass the noise"):
        steps.step(t(2.0), t(1.5), 0)


def test_euler_step_hand_worked():
    steps = FewStepScheduler((1.0, 0.5), 1000, "euler")
    # x0 = 0.5 as above; next = x0 + (0.5 / 1) (x - x0) = 0.5 + 0.75 = 1.25, keeping x's noise
    x, x0 = steps.step(t(2.0), t(1.5), 0)
    assert torch.equal(x0, t(0.5)) and torch.equal(x, t(1.25))
    assert [steps.needs_noise(i) for i in range(2)] == [False, False]


def test_guidance_hand_worked_and_the_dtype_kept():
    steps = FewStepScheduler((1.0,), 1000, "euler", guidance_scale=3.0)
    v = torch.cat([t(2.0), t(1.0)])  # prompt half 2, zeroed-prompt half 1: 1 + 3 (2 - 1) = 4
    assert steps.guided and torch.equal(steps.guide(v), t(4.0))
    x, x0 = steps.step(t(2.0, torch.bfloat16), t(1.5, torch.bfloat16), 0)
    assert x is None and x0.dtype == torch.bfloat16 and torch.equal(x0, t(0.5, torch.bfloat16))
