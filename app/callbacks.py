"""What the studio's events run: a generation or an ablation streaming block by block, the
submit validators that arm a session's Stop, the stop and tab-close handlers, the trace
upload and scrub. Each turns a bad request into a plain message (user text as text)."""

from __future__ import annotations

import html

import gradio as gr

from . import sessions
from .handlers import AblationRun, Run, build_config, live_controls, load_trace, plain, replay_figures

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
             recache="all",
             request: gr.Request = None):
    """Streams: video segment, preview, four figures, status, final video, trace, camera figure."""
    nothing = gr.skip()
    session = _session(request)
    flag = sessions.begin_run(session, "generate")
    try:
        if flag.is_set():  # Stop was pressed while this run waited in the queue
            yield (*(nothing,) * 6, "Stopped before it started.", nothing, nothing, nothing)
            return
        try:
            config = build_config(model, sink_frames, top_k, mid_capacity, policy, rope_repair, compression, recache)
            run = Run(model, prompt, seconds, seed, config, stop=flag, camera=camera, controls=live_controls(session))
        except ValueError as e:
            yield (*(nothing,) * 6, _refused(e), nothing, nothing, nothing)
            return
        run.use_folder(sessions.new_run_dir(session))  # only now: it retires the session's older folders
        for update in run.updates():
            figures = update.get("figures") or (nothing,) * 4
            yield (
                update.get("segment", nothing),
                update.get("preview", nothing),
                *figures,
                update["status"],
                update.get("video", nothing),
                update.get("trace", nothing),
                update.get("camera", nothing),
            )
    finally:
        sessions.end_run(session, "generate", flag)


@gpu
def ablate(model, prompt, seconds, seed, preset_a, preset_b, switch_at=8, switch_to="", request: gr.Request = None):
    """Streams, for each side: video segment, preview, four figures; then status and the comparison."""
    nothing = gr.skip()
    session = _session(request)
    flag = sessions.begin_run(session, "ablation")
    try:
        if flag.is_set():
            yield (*(nothing,) * 12, "Stopped before it started.", nothing)
            return
        try:
            lab = AblationRun(model, prompt, seconds, seed, preset_a, preset_b, flag, switch_at, switch_to)
        except ValueError as e:
            yield (*(nothing,) * 12, _refused(e), nothing)
            return
        lab.use_folder(sessions.new_run_dir(session))
        for a, b, comparison in lab.updates():
            sides = []
            for update in (a, b):
                update = update or {}
                sides += [update.get("segment", nothing), update.get("preview", nothing),
                          *(update.get("figures") or (nothing,) * 4)]
            status = " · ".join(f"**{name}**: {u['status']}" for name, u in zip(lab.names, (a, b)) if u)
            yield (*sides, status or nothing, comparison or nothing)
    finally:
        sessions.end_run(session, "ablation", flag)


# Validators: Gradio runs them when a run is submitted, before it is queued (browser and
# API clients alike). They arm the session's stop flag; the run checks its inputs itself.
# (Gradio hands gr.Request only to a named parameter, hence the full signatures.)
def arm_generate(model, prompt, seconds, seed, sink_frames, top_k, mid_capacity, policy, rope_repair, compression,
                 camera, recache="all",
                 request: gr.Request = None):
    sessions.arm_stop(_session(request), "generate")
    return [gr.validate(True, "")] * 12


def arm_ablation(model, prompt, seconds, seed, preset_a, preset_b, switch_at=8, switch_to="",
                 request: gr.Request = None):
    sessions.arm_stop(_session(request), "ablation")
    return [gr.validate(True, "")] * 8


def stopper(view: str):
    def stop(request: gr.Request):
        sessions.request_stop(_session(request), view)
    return stop


def end_session(request: gr.Request):
    sessions.end_session(_session(request))


def on_trace_upload(file):
    """(events, slider, status line, four figures): a bad file empties all of them."""
    try:
        events, last = load_trace(file)
    except (ValueError, OSError) as e:
        return [], gr.update(maximum=1, value=0), f"⚠️ **Error:** {plain(e)}", *replay_figures([], 0)
    return events, gr.update(maximum=max(last, 1), value=last), f"Loaded {last + 1} blocks.", *replay_figures(events,
                                                                                                              last)


def on_replay_scrub(events, block):
    try:
        return replay_figures(events, block)
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
