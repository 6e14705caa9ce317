"""One forward of the transformer over a cache session, in one of the session's modes.

The sampler's denoising passes and the block memory's write and compressed passes all
run here: the processors are told whose cache this is and where RoPE places the tokens.
"""

from __future__ import annotations

import torch

from .attention import CacheSession, install
from .backbone import Backbone
from .cache import BlockKV
from .rope import to_device


class ModelPasses:
    def __init__(self, backbone: Backbone, session: CacheSession):
        self.backbone = backbone
        self.session = session
        self.slot, self.rope = install(backbone.transformer)
        self._timesteps: dict[tuple, torch.Tensor] = {}

    def run(self, latent, timestep, text, mode: str, frame_offset: float, pending: BlockKV | None = None,
            spacing=(1.0, 1.0, 1.0), center=(0.0, 0.0, 0.0)) -> torch.Tensor:
        """A denoising pass's predicted flow velocity; a write or compressed pass fills
        `pending`'s K/V (its output is the transformer's, unused).
        frame_offset: the latent frame the tokens start at (RoPE's time position)."""
        self.slot.session = self.session  # this cache's turn on the shared weights
        self.session.set_mode(mode, pending)
        self.rope.place(frame_offset, spacing, center)
        if self.backbone.on_frame is not None:
            self.backbone.on_frame(frame_offset)
        # one timestep per batch element (a float shares one; training passes a tensor)
        t = self._timestep(timestep, latent.device).expand(latent.shape[0])
        try:
            (output,) = self.backbone.transformer(latent, timestep=t, encoder_hidden_states=text, return_dict=False)
            return self.backbone.velocity(latent, output, t) if mode == "denoise" else output
        finally:
            self.session.set_mode("plain")

    def _timestep(self, timestep, device) -> torch.Tensor:
        """A float timestep as a device tensor made once per run (a copy per pass would
        make the host wait for the GPU at every pass)."""
        if torch.is_tensor(timestep):
            return timestep.to(device, torch.float32)
        key = (float(timestep), device)
        if key not in self._timesteps:
            self._timesteps[key] = to_device(torch.tensor(float(timestep)), device)
        return self._timesteps[key]
