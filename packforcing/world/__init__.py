"""The embedded model's procedural world: scene + renderer, prompt vocabulary, the fixed
codec in the VAE's role, and metrics computed from generated frames."""
