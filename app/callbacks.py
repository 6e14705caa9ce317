"""What the studio's events run: a generation or an ablation streaming block by block, the
submit validators that arm a session's Stop, the stop and tab-close handlers, the trace
upload and scrub. Each turns a bad request into a plain message (user text as text)."""

from __future__ import annotations

import html

import gradio as gr

from packforcing.controls import LiveControls
from visualizers.narration import narration_at

from . import lessons, sessions
from .handlers import AblationRun, Run, build_config, load_trace, plain, replay_figures
from .live import Live

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU(duration=300)
except ImportError:
    def gpu(fn):
        return fn


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _refused(e: ValueError) -> str:
    """A request the studio cannot run: a toast and the status line, the message as text
    (a toast renders HTML, not Markdown)."""
    gr.Warning(html.escape(str(e)))
    return f"⚠️ **Error:** {plain(e)}"


@gpu
def generate(model, prompt, seconds, seed, sink_frames, top_k, mid_capacity, policy, rope_repair, compression, camera,
             recache="all", request: gr.Request = None):
    """Streams: video segment, preview, four figures, status, final video, trace, camera figure, narration."""
    nothing = gr.skip()
    session = _session(request)
    flag = sessions.begin_run(session, "generate")
    live = None
    try:
        if flag.is_set():  # Stop was pressed while this run waited in the queue
            yield (*(nothing,) * 6, "Stopped before it started.", *(nothing,) * 4)
            return
        try:
            config = build_config(model, sink_frames, top_k, mid_capacity, policy, rope_repair, compression, recache)
            run = Run(model, prompt, seconds, seed, config, stop=flag, camera=camera, controls=LiveControls())
        except ValueError as e:
            yield (*(nothing,) * 6, _refused(e), *(nothing,) * 4)
            return
        run.use_folder(sessions.new_run_dir(session))  # only now: it retires the session's older folders
        live = Live(run.controls, run.pipe)
        sessions.hold_live(session, live)  # Switch and the camera buttons reach this run until it ends
        for update in run.updates():
            yield (
                update.get("segment", nothing),
                update.get("preview", nothing),
                *(update.get("figures") or (nothing,) * 4),
                update["status"],
                update.get("video", nothing),
                update.get("trace", nothing),
                update.get("camera", nothing),
                update.get("narration", nothing),
            )
    finally:
        sessions.release_live(session, live)
        sessions.end_run(session, "generate", flag)


def _pair_updates(lab: AblationRun):
    """(14 side outputs, status, comparison) per step: each side's segment, preview, four figures, narration."""
    nothing = gr.skip()
    for a, b, comparison in lab.updates():
        sides = []
        for update in (a, b):
            update = update or {}
            sides += [update.get("segment", nothing), update.get("preview", nothing),
                      *(update.get("figures") or (nothing,) * 4), update.get("narration", nothing)]
        status = " · ".join(f"**{name}**: {u['status']}" for name, u in zip(lab.names, (a, b)) if u)
        yield sides, status or nothing, comparison or nothing


def _stream_pair(make, session):
    """Runs the pair `make(stop flag)` builds in the session's ablation slot; yields
    (sides, status, comparison, lab)."""
    nothing = gr.skip()
    flag = sessions.begin_run(session, "ablation")
    try:
        if flag.is_set():
            yield [nothing] * 14, "Stopped before it started.", nothing, None
            return
        try:
            lab = make(flag)
        except ValueError as e:
            yield [nothing] * 14, _refused(e), nothing, None
            return
        lab.use_folder(sessions.new_run_dir(session))
        for sides, status, comparison in _pair_updates(lab):
            yield sides, status, comparison, lab
    finally:
        sessions.end_run(session, "ablation", flag)


@gpu
def ablate(model, prompt, seconds, seed, preset_a, preset_b, switch_at=8, switch_to="", request: gr.Request = None):
    """Streams, for each side: video segment, preview, four figures, narration; then status and the comparison."""
    make = lambda flag: AblationRun(model, prompt, seconds, seed, preset_a, preset_b, flag, switch_at, switch_to)  # noqa: E731
    for sides, status, comparison, _ in _stream_pair(make, _session(request)):
        yield (*sides, status, comparison)


@gpu
def run_lesson(title, model, prompt, seconds, seed, request: gr.Request = None):
    """A lesson: the ablation's outputs, then its two presets and its text (with the measured difference at the end)."""
    nothing = gr.skip()
    try:
        chosen = lessons.find(title, model)
    except ValueError as e:
        yield (*(nothing,) * 14, _refused(e), *(nothing,) * 4)
        return
    make = lambda flag: lessons.pair(chosen, model, prompt, seconds, seed, flag)  # noqa: E731
    intro = lessons.explain(chosen)
    for sides, status, comparison, lab in _stream_pair(make, _session(request)):
        done = lab is not None and comparison is not nothing
        yield (*sides, status, comparison, chosen.a, chosen.b, lessons.explain(chosen, lab) if done else intro)


# Validators: Gradio runs them when a run is submitted, before it is queued (browser and
# API clients alike). They arm the session's stop flag; the run checks its inputs itself.
# (Gradio hands gr.Request only to a named parameter, hence the full signatures.)
def arm_generate(model, prompt, seconds, seed, sink_frames, top_k, mid_capacity, policy, rope_repair, compression,
                 camera, recache="all", request: gr.Request = None):
    sessions.arm_stop(_session(request), "generate")
    return [gr.validate(True, "")] * 12


def arm_ablation(model, prompt, seconds, seed, preset_a, preset_b, switch_at=8, switch_to="",
                 request: gr.Request = None):
    sessions.arm_stop(_session(request), "ablation")
    return [gr.validate(True, "")] * 8


def arm_lesson(title, model, prompt, seconds, seed, request: gr.Request = None):
    sessions.arm_stop(_session(request), "ablation")
    return [gr.validate(True, "")] * 5


def stopper(view: str):
    def stop(request: gr.Request):
        sessions.request_stop(_session(request), view)
    return stop


def end_session(request: gr.Request):
    sessions.end_session(_session(request))


def on_trace_upload(file):
    """(events, slider, status line, four figures, narration): a bad file empties all of them."""
    try:
        events, last = load_trace(file)
    except (ValueError, OSError) as e:
        return [], gr.update(maximum=1, value=0), f"⚠️ **Error:** {plain(e)}", *replay_figures([], 0), ""
    return (events, gr.update(maximum=max(last, 1), value=last), f"Loaded {last + 1} blocks (0 to {last}).",
            *replay_figures(events, last), plain(narration_at(events, last)))


def on_replay_scrub(events, block):
    """The four panels and the narration of `block`."""
    try:
        return *replay_figures(events, block), plain(narration_at(events, block)) if events else ""
    except ValueError as e:
        raise gr.Error(plain(e)) from None


class Studio(gr.Blocks):
    def validate_inputs(self, block_fn, inputs):
        """Too few inputs (an API call) gets a plain message instead of Gradio's, which
        lists the components' Python reprs."""
        if len(inputs) < len(block_fn.inputs):
            names = ", ".join(getattr(c, "label", None) or type(c).__name__ for c in block_fn.inputs)
            raise gr.Error(f"this endpoint takes {len(block_fn.inputs)} inputs ({names}); {len(inputs)} were sent")
        super().validate_inputs(block_fn, inputs)
