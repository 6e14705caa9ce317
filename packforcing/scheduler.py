"""The few-step update of a block (diffusers' `scheduler.step`, for Self-Forcing's schedule).

At each warped timestep the model predicts the flow velocity v; the clean estimate is
x0 = x - sigma * v, and the next input is x0 re-noised to the next level (`renoise`,
with fresh noise) or moved along the flow ODE keeping x's noise (`euler`). Classifier-free
guidance combines the prompt's and the zeroed prompt's velocities before the step.
The arithmetic runs in float64 and returns the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import PackForcingConfig


def euler_step(x, x0, sigma, sigma_next):
    """The flow ODE step from noise level sigma to sigma_next, keeping x's predicted noise."""
    return x0 + (sigma_next / sigma) * (x - x0)


@dataclass(frozen=True)
class FewStepScheduler:
    sigmas: tuple[float, ...]  # noise levels of the warped timesteps (config.sigmas: the shift applied)
    num_train_timesteps: int
    step_rule: str = "renoise"  # or euler
    guidance_scale: float = 1.0  # 1: off

    @classmethod
    def from_config(cls, config: PackForcingConfig) -> FewStepScheduler:
        return cls(config.sigmas, config.num_train_timesteps, config.step_rule, config.guidance_scale)

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    def timestep(self, i: int) -> float:
        """The model's timestep at step i."""
        return self.sigmas[i] * self.num_train_timesteps

    def guide(self, v: torch.Tensor) -> torch.Tensor:
        """The velocity of a guided batch (prompt half, then zeroed-prompt half)."""
        v, v_uncond = v.chunk(2)
        return v_uncond + self.guidance_scale * (v - v_uncond)

    def needs_noise(self, i: int) -> bool:
        """Whether step i's update draws fresh noise (renoise, and not the last step)."""
        return self.step_rule != "euler" and i + 1 < len(self.sigmas)

    def step(self, x: torch.Tensor, v: torch.Tensor, i: int, noise: torch.Tensor | None = None):
        """(the next step's input, or None after the last step; the clean estimate x0)."""
        sigma = self.sigmas[i]
        x0 = (x.double() - sigma * v.double()).to(x.dtype)
        if i + 1 == len(self.sigmas):
            return None, x0
        nxt = self.sigmas[i + 1]
        if self.step_rule == "euler":
            return euler_step(x.double(), x0.double(), sigma, nxt).to(x.dtype), x0
        if noise is None:
            raise ValueError(f"step {i} re-noises to sigma {nxt:g}: pass the noise")
        return ((1 - nxt) * x0.double() + nxt * noise.double()).to(x.dtype), x0
