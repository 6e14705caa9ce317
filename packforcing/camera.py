"""Camera paths: where a model's camera moves, block by block.

A path is written as comma-separated segments `direction:seconds`, e.g. `right:8,left:8`
or `still:2,right:6`. Directions are the live controls' (left, still, right). Blocks are
the sampler's generation blocks; a segment covers the blocks whose start falls inside it,
and the last segment's direction holds after the path ends. What a direction moves is the
model's business (the embedded model pans a fixed number of pixels per frame); models
without a camera ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import shown
from .controls import CAMERA_DIRECTIONS


@dataclass(frozen=True)
class CameraPath:
    segments: tuple[tuple[str, float], ...]

    def __post_init__(self):
        if not self.segments:
            raise ValueError("the camera path is empty; write segments like right:8,left:8")
        for direction, seconds in self.segments:
            if direction not in CAMERA_DIRECTIONS:
                raise ValueError(
                    f"camera segment {direction[:20]}:{seconds:g}: direction {shown(direction)} is not allowed; "
                    f"choose one of {', '.join(CAMERA_DIRECTIONS)}"
                )
            if not seconds > 0:
                raise ValueError(f"camera segment {direction[:20]}:{seconds:g}: seconds must be > 0")

    @classmethod
    def parse(cls, text: str) -> CameraPath:
        """`right:8,left:8` -> CameraPath; errors name the bad segment and what is allowed."""
        segments = []
        for raw in (text or "").split(","):
            part = raw.strip()
            direction, sep, seconds = part.partition(":")
            try:
                value = float(seconds) if sep else None
            except ValueError:
                value = None
            if value is None:
                raise ValueError(
                    f"camera segment {shown(part)} is not direction:seconds; write e.g. right:8,left:8 "
                    f"with directions {', '.join(CAMERA_DIRECTIONS)}"
                )
            segments.append((direction.strip().lower(), value))
        return cls(tuple(segments))

    def direction_at(self, seconds: float) -> str:
        """The direction in force at `seconds` from the start (the last one after the end)."""
        end = 0.0
        for direction, length in self.segments:
            end += length
            if seconds < end - 1e-9:
                return direction
        return self.segments[-1][0]

    def directions(self, num_blocks: int, seconds_per_block: float) -> list[str]:
        return [self.direction_at(i * seconds_per_block) for i in range(num_blocks)]

    def __str__(self) -> str:
        return ",".join(f"{d}:{s:g}" for d, s in self.segments)
