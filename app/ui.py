"""The PackForcing studio (Gradio Blocks). No model is loaded until Generate is pressed."""

from __future__ import annotations

import html

import gradio as gr

from packforcing import registry
from packforcing.config import COMPRESSIONS, MAX_MID_CAPACITY, MAX_SINK_FRAMES, MAX_TOP_K, POLICIES, PackForcingConfig
from packforcing.memory import PAPER_FPS, PAPER_HEIGHT, PAPER_SECONDS, PAPER_WIDTH
from visualizers import empty_figure

from . import sessions
from .handlers import AblationRun, Run, ablation_presets, build_config, calculator, live_controls, load_trace, plain, replay_figures, steerer

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU(duration=300)
except ImportError:
    def gpu(fn):
        return fn

PANEL_HELP = {
    "occupancy": "Tokens each block attends, by partition. Archived mid blocks are held in memory but not attended. The dashed line is the bounded context: it never grows.",
    "selection": "Each row is a generated block, each column a compressed mid block. Colour = how much the current queries want that block; squares = the top-k actually attended. Old blocks keep getting picked: attention demand spans the whole history.",
    "rope": "Keys are cached already rotated at the time they were generated. Before attending, selected blocks are moved (rotated in time) so that sink, mid and recent sit side by side before the current block: the gaps left by unselected or evicted blocks close.",
    "camera": "Models with a camera (the embedded one): bars show where each block was filmed on the wrapping panorama, coloured by the partition that holds it now; the band is where the camera looks. When it comes back to a place, the mid-bank block that filmed it should turn orange (attended).",
    "memory": "Bytes of K/V actually held by this run vs a full cache. Below: the same policies for the real Wan2.1-1.3B at 832x480 (about 4 GB vs 138 GB at 120 s).",
}


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _refused(e: ValueError) -> str:
    """A request the studio cannot run: a toast and the status line, the message as text
    (a toast renders HTML, not Markdown)."""
    gr.Warning(html.escape(str(e)))
    return f"⚠️ **Error:** {plain(e)}"


@gpu
def _generate(model, prompt, seconds, seed, sink_frames, top_k, mid_capacity, policy, rope_repair, compression, camera, request: gr.Request = None):
    """Streams: video segment, preview, four figures, status, final video, trace, camera figure."""
    nothing = gr.skip()
    session = _session(request)
    flag = sessions.begin_run(session, "generate")
    try:
        if flag.is_set():  # Stop was pressed while this run waited in the queue
            yield (*(nothing,) * 6, "Stopped before it started.", nothing, nothing, nothing)
            return
        try:
            config = build_config(model, sink_frames, top_k, mid_capacity, policy, rope_repair, compression)
            run = Run(model, prompt, seconds, seed, config, sessions.new_run_dir(session), flag, camera=camera, controls=live_controls(session))
        except ValueError as e:
            yield (*(nothing,) * 6, _refused(e), nothing, nothing, nothing)
            return
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
def _ablate(model, prompt, seconds, seed, preset_a, preset_b, request: gr.Request = None):
    """Streams, for each side: video segment, preview, four figures; then status and the comparison."""
    nothing = gr.skip()
    session = _session(request)
    flag = sessions.begin_run(session, "ablation")
    try:
        if flag.is_set():
            yield (*(nothing,) * 12, "Stopped before it started.", nothing)
            return
        try:
            lab = AblationRun(model, prompt, seconds, seed, preset_a, preset_b, flag, sessions.new_run_dir(session))
        except ValueError as e:
            yield (*(nothing,) * 12, _refused(e), nothing)
            return
        for a, b, comparison in lab.updates():
            sides = []
            for update in (a, b):
                update = update or {}
                sides += [update.get("segment", nothing), update.get("preview", nothing), *(update.get("figures") or (nothing,) * 4)]
            status = " · ".join(f"**{name}**: {u['status']}" for name, u in zip(lab.names, (a, b)) if u)
            yield (*sides, status or nothing, comparison or nothing)
    finally:
        sessions.end_run(session, "ablation", flag)


# Validators: Gradio runs them when a run is submitted, before it is queued (browser and
# API clients alike). They arm the session's stop flag; the run checks its inputs itself.
# (Gradio hands gr.Request only to a named parameter, hence the full signatures.)
def _arm_generate(model, prompt, seconds, seed, sink_frames, top_k, mid_capacity, policy, rope_repair, compression, camera,
                  request: gr.Request = None):
    sessions.arm_stop(_session(request), "generate")
    return [gr.validate(True, "")] * 11


def _arm_ablation(model, prompt, seconds, seed, preset_a, preset_b, request: gr.Request = None):
    sessions.arm_stop(_session(request), "ablation")
    return [gr.validate(True, "")] * 6


def _stopper(view: str):
    def stop(request: gr.Request):
        sessions.request_stop(_session(request), view)
    return stop


def _end_session(request: gr.Request):
    sessions.end_session(_session(request))


def on_trace_upload(file):
    """(events, slider, status line, four figures): a bad file empties all of them."""
    try:
        events, last = load_trace(file)
    except (ValueError, OSError) as e:
        return [], gr.update(maximum=1, value=0), f"⚠️ **Error:** {plain(e)}", *replay_figures([], 0)
    return events, gr.update(maximum=max(last, 1), value=last), f"Loaded {last + 1} blocks.", *replay_figures(events, last)


def on_replay_scrub(events, block):
    try:
        return replay_figures(events, block)
    except ValueError as e:
        raise gr.Error(plain(e)) from None


def _model_note() -> str:
    lines = []
    for name, entry in registry.entries().items():
        reason = entry.unavailable()
        lines.append(f"- **{name}**: {entry.description}; " + ("available" if reason is None else f"unavailable ({reason})"))
    return "\n".join(lines)


def _defaults_for(model):
    c = registry.get(model).default_config
    return c.sink_frames, c.top_k, c.mid_capacity, c.policy, c.rope_repair, c.compression


def _examples(model: str) -> list[str]:
    """The default model's example prompts, else every model's."""
    own = registry.get(model).examples
    return list(own or [p for e in registry.entries().values() for p in e.examples])


class Studio(gr.Blocks):
    def validate_inputs(self, block_fn, inputs):
        """Too few inputs (an API call) gets a plain message instead of Gradio's, which
        lists the components' Python reprs."""
        if len(inputs) < len(block_fn.inputs):
            names = ", ".join(getattr(c, "label", None) or type(c).__name__ for c in block_fn.inputs)
            raise gr.Error(f"this endpoint takes {len(block_fn.inputs)} inputs ({names}); {len(inputs)} were sent")
        super().validate_inputs(block_fn, inputs)


def build_demo() -> gr.Blocks:
    usable = [name for name, reason in registry.available_models().items() if reason is None]
    model0 = registry.default_model()
    entry0 = registry.get(model0)
    c0 = entry0.default_config
    examples = _examples(model0)
    paper = PackForcingConfig()
    with Studio(title="PackForcing Studio", delete_cache=(600, sessions.RUN_FILES_TTL)) as demo:
        gr.Markdown(
            "# PackForcing Studio\nLong streaming video with a **bounded KV cache**: a full-resolution **sink**, a **compressed mid bank** "
            "searched by **top-k selection**, and the **recent** block — with RoPE packing so the model never sees the gaps. "
            "Type a prompt, press Generate, and watch the memory work block by block."
        )
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=2):
                    prompt = gr.Textbox(label="Prompt", value=examples[0], lines=2, max_lines=4, elem_id="prompt")
                    gr.Examples(examples, inputs=prompt, label="Examples (click one)")
                    with gr.Row():
                        seconds = gr.Slider(1, entry0.max_seconds, value=16, step=1, label="Duration (seconds)", elem_id="seconds")
                        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                    model = gr.Dropdown(usable, value=model0, label="Model", elem_id="model")
                    with gr.Accordion("Advanced: the cache", open=False):
                        sink = gr.Slider(0, MAX_SINK_FRAMES, value=c0.sink_frames, step=c0.block_frames, label="Sink frames (latent frames, multiple of 4)")
                        top_k = gr.Slider(0, MAX_TOP_K, value=c0.top_k, step=1, label="Top-k mid blocks attended")
                        capacity = gr.Slider(0, MAX_MID_CAPACITY, value=c0.mid_capacity, step=1, label="Mid-bank capacity (compressed blocks)")
                        policy = gr.Radio(list(POLICIES), value=c0.policy, label="Selection policy")
                        rope = gr.Checkbox(value=c0.rope_repair, label="RoPE repair (pack attended blocks in time)")
                        compression = gr.Radio(list(COMPRESSIONS), value=c0.compression, label="Compression")
                        gr.Markdown(_model_note())
                    camera = gr.Textbox(label="Camera path (models with a camera)", value="", max_lines=1, elem_id="camera-path",
                                        placeholder="e.g. right:8,left:8 (direction:seconds; empty: the prompt's pan)")
                    with gr.Row():
                        go_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                    with gr.Row():
                        # steer the next block while the video streams
                        steer_btns = {d: gr.Button(label, elem_id=f"camera-{d}", size="sm")
                                      for d, label in (("left", "← left"), ("still", "■ still"), ("right", "right →"))}
                    status = gr.Markdown("Ready.", elem_id="status")
                with gr.Column(scale=3):
                    with gr.Row():
                        video = gr.Video(label="Streaming video", streaming=True, autoplay=True, elem_id="stream")
                        preview = gr.Image(label="Newest frame", elem_id="preview", height=256)
                    with gr.Row():
                        final = gr.File(label="Finished video (mp4)", elem_id="final")
                        trace = gr.File(label="Trace (JSONL, replay it in the Trace tab)", elem_id="trace")
            with gr.Row():
                with gr.Column():
                    occupancy = gr.Plot(empty_figure(), label="Occupancy", elem_id="panel-occupancy")
                    gr.Markdown(PANEL_HELP["occupancy"])
                with gr.Column():
                    selection = gr.Plot(empty_figure(), label="Top-k selection", elem_id="panel-selection")
                    gr.Markdown(PANEL_HELP["selection"])
            with gr.Row():
                with gr.Column():
                    rope_plot = gr.Plot(empty_figure(), label="RoPE offsets", elem_id="panel-rope")
                    gr.Markdown(PANEL_HELP["rope"])
                with gr.Column():
                    memory = gr.Plot(empty_figure(), label="KV memory", elem_id="panel-memory")
                    gr.Markdown(PANEL_HELP["memory"])
            with gr.Row():
                with gr.Column():
                    camera_plot = gr.Plot(empty_figure(), label="Camera and memory", elem_id="panel-camera")
                    gr.Markdown(PANEL_HELP["camera"])
            model.change(_defaults_for, model, [sink, top_k, capacity, policy, rope, compression])
            outputs = [video, preview, occupancy, selection, rope_plot, memory, status, final, trace, camera_plot]
            # Submitting arms a stop flag (the validator) before the run is queued: a Stop
            # while it waits keeps it from starting; a Stop while it runs ends it after the
            # block in flight, with its video and trace so far. So does a closed tab (unload).
            go_btn.click(
                _generate, [model, prompt, seconds, seed, sink, top_k, capacity, policy, rope, compression, camera], outputs,
                concurrency_limit=1, concurrency_id="gpu", api_name="generate", validator=_arm_generate,
            )
            for direction, btn in steer_btns.items():
                btn.click(steerer(direction), None, None, queue=False)
            stop_btn.click(_stopper("generate"), None, None, queue=False, api_name="stop")

        with gr.Tab("Ablation"):
            gr.Markdown(
                "Two memory configurations, the **same prompt and seed**, generated side by side. On the embedded model the "
                "camera comes back to the same place every 8 s: watch which configuration remembers what it showed. "
                "The table at the end scores both videos from their pixels."
            )
            presets = list(ablation_presets(model0))
            with gr.Row():
                a_prompt = gr.Textbox(label="Prompt", value=examples[0], lines=1, scale=3, elem_id="ablation-prompt")
                a_seconds = gr.Slider(1, entry0.max_seconds, value=24, step=1, label="Duration (seconds)", scale=2, elem_id="ablation-seconds")
                a_seed = gr.Number(value=0, precision=0, label="Seed", scale=1)
                a_model = gr.Dropdown(usable, value=model0, label="Model", scale=1)
            with gr.Row():
                preset_a = gr.Dropdown(presets, value="window", label="Left", elem_id="preset-a")
                preset_b = gr.Dropdown(presets, value="dynamic", label="Right", elem_id="preset-b")
            with gr.Row():
                a_go = gr.Button("Run both", variant="primary", elem_id="ablation-run")
                a_stop = gr.Button("Stop", variant="stop")
            a_status = gr.Markdown("Ready.", elem_id="ablation-status")
            side_outputs = []
            with gr.Row():
                for side in ("a", "b"):
                    with gr.Column():
                        with gr.Row():
                            side_video = gr.Video(label="Streaming video", streaming=True, autoplay=True, elem_id=f"ablation-stream-{side}")
                            side_preview = gr.Image(label="Newest frame", height=200, elem_id=f"ablation-preview-{side}")
                        plots = [gr.Plot(empty_figure(), label=label, elem_id=f"ablation-{key}-{side}")
                                 for key, label in (("occupancy", "Occupancy"), ("selection", "Top-k selection"), ("rope", "RoPE offsets"), ("memory", "KV memory"))]
                        side_outputs += [side_video, side_preview, *plots]
            comparison = gr.Markdown(elem_id="ablation-table")
            a_go.click(_ablate, [a_model, a_prompt, a_seconds, a_seed, preset_a, preset_b], side_outputs + [a_status, comparison],
                       concurrency_limit=1, concurrency_id="gpu", api_name="ablate", validator=_arm_ablation)
            a_stop.click(_stopper("ablation"), None, None, queue=False, api_name="stop_ablation")

        with gr.Tab("Memory calculator"):
            gr.Markdown("Tokens and bytes of the cache for any video, no model needed. Defaults are the paper's: "
                        f"{PAPER_WIDTH}x{PAPER_HEIGHT}, {PAPER_FPS} FPS, {PAPER_SECONDS:g} s.")
            with gr.Row():
                c_w = gr.Number(PAPER_WIDTH, precision=0, label="Width")
                c_h = gr.Number(PAPER_HEIGHT, precision=0, label="Height")
                c_fps = gr.Number(PAPER_FPS, precision=0, label="FPS")
                c_s = gr.Number(PAPER_SECONDS, label="Seconds")
                c_sink = gr.Number(paper.sink_frames, precision=0, label="Sink frames")
                c_k = gr.Number(paper.top_k, precision=0, label="Top-k")
                c_cap = gr.Number(paper.mid_capacity, precision=0, label="Mid capacity")
            c_btn = gr.Button("Compute")
            with gr.Row():
                c_table = gr.Markdown(elem_id="calc-table")
                c_plot = gr.Plot(label="KV cache by policy")
            c_inputs = [c_w, c_h, c_fps, c_s, c_sink, c_k, c_cap]
            c_btn.click(calculator, c_inputs, [c_table, c_plot], queue=False)
            demo.load(calculator, c_inputs, [c_table, c_plot], queue=False)

        with gr.Tab("Trace replay"):
            gr.Markdown("Upload a trace (from the Generate tab or `python -m packforcing generate --trace`) and scrub through it block by block. No model runs.")
            events_state = gr.State([])
            with gr.Row():
                upload = gr.File(label="trace .jsonl", file_types=[".jsonl", ".json", ".txt"], elem_id="trace-upload")
                with gr.Column():
                    r_msg = gr.Markdown(elem_id="replay-status")
                    slider = gr.Slider(0, 1, value=0, step=1, label="Block", elem_id="replay-block")
            with gr.Row():
                r_occ, r_sel = gr.Plot(empty_figure("Upload a trace")), gr.Plot(empty_figure("Upload a trace"))
            with gr.Row():
                r_rope, r_mem = gr.Plot(empty_figure("Upload a trace")), gr.Plot(empty_figure("Upload a trace"))

            # Both go through the queue (their own slot, beside the model's): a trace is
            # checked before anything is drawn, so each costs in proportion to its blocks.
            upload.upload(on_trace_upload, upload, [events_state, slider, r_msg, r_occ, r_sel, r_rope, r_mem],
                          concurrency_limit=2, concurrency_id="replay", api_name="load_trace")
            slider.change(on_replay_scrub, [events_state, slider], [r_occ, r_sel, r_rope, r_mem],
                          concurrency_limit=2, concurrency_id="replay", trigger_mode="always_last", api_name="replay")
        demo.unload(_end_session)
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo
