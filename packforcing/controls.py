"""Live controls: what a user changes while a run streams (the prompt, the camera).

The app writes them from its event handlers while the sampler's generator runs; the
sampler reads them once per block, at the block boundary, so a change applies from the
next block on. Writes and reads take a lock: they come from different threads.
"""

from __future__ import annotations

import threading

from .config import shown

CAMERA_DIRECTIONS = ("left", "still", "right")


class LiveControls:
    def __init__(self, camera: str | None = None, lock: threading.Lock | None = None):
        self._lock = lock or threading.Lock()  # a caller's lock: held by it, a change waits (tests make races certain)
        self._prompt: str | None = None
        self._camera: str | None = None
        if camera is not None:
            self.steer(camera)

    def switch_prompt(self, prompt: str) -> None:
        """Queue a new prompt; the next block boundary applies it (a later call replaces it)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the new prompt is empty; type what the video should show")
        with self._lock:
            self._prompt = prompt

    def steer(self, direction: str) -> None:
        """Hold the camera moving `direction` from the next block until changed."""
        if direction not in CAMERA_DIRECTIONS:
            raise ValueError(f"camera direction {shown(direction)} is not allowed; "
                             f"choose one of {', '.join(CAMERA_DIRECTIONS)}")
        with self._lock:
            self._camera = direction

    def poll(self) -> tuple[str | None, str | None]:
        """(the prompt queued since the last poll, or None; the camera direction held, or None)."""
        with self._lock:
            prompt, self._prompt = self._prompt, None
            return prompt, self._camera
