"""The live controls of a streaming generation (Switch prompt, the camera buttons) and
which of them a model offers. They act on the session's running generation only: a
switched prompt is checked against the model that runs, and once the run ends they say
that nothing is streaming. No handler here loads a model."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from packforcing import registry
from packforcing.controls import LiveControls

from . import sessions
from .handlers import plain

NOTHING_STREAMING = "nothing is streaming: press Generate, then use this while the video streams"


@dataclass(frozen=True)
class Live:
    controls: LiveControls
    pipe: object  # the running model's pipeline: what a switched prompt is checked against


def _session(request) -> str | None:
    return getattr(request, "session_hash", None)


def _error(e: ValueError) -> str:
    return f"⚠️ **Error:** {plain(e)}"


def switch_prompt(prompt, request: gr.Request = None) -> str:
    """The Switch button: this session's streaming run takes `prompt` from its next block."""
    live = sessions.live(_session(request))
    try:
        if live is None:
            raise ValueError(NOTHING_STREAMING)
        live.pipe.validate_prompt(prompt)
        live.controls.switch_prompt(prompt)
    except ValueError as e:
        return _error(e)
    return "Switching: the new prompt applies from the next block."


def steerer(direction: str):
    """The click handler of a camera button: this session's running generation moves
    `direction` from its next block (a status line either way)."""

    def steer(request: gr.Request = None) -> str:
        live = sessions.live(_session(request))
        if live is None:
            return _error(ValueError(NOTHING_STREAMING))
        if not live.pipe.has_camera:
            return _error(ValueError(f"model {live.pipe.name} has no camera to steer; "
                                     "the camera buttons steer models that take one"))
        live.controls.steer(direction)
        return f"Steering {direction} from the next block."

    return steer


def camera_note(model) -> str:
    """One line for a model without a camera ('' for one with a camera)."""
    entry = registry.entries().get(model) if isinstance(model, str) else None
    if entry is not None and entry.camera:
        return ""
    return (f"{plain(str(model)[:40])} takes no camera: no camera path, steering or camera panel "
            "(no shipped model takes one yet).")


def camera_controls(model) -> tuple:
    """Visibility of the camera path, the three steer buttons and the camera panel, then the note."""
    note = camera_note(model)
    return (*[gr.update(visible=not note)] * 5, gr.update(value=note, visible=bool(note)))
