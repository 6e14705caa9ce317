"""The PackForcing studio (Gradio Blocks). No model is loaded until Generate is pressed."""

from __future__ import annotations

import gradio as gr

from packforcing import registry
from packforcing.config import (
    COMPRESSIONS,
    MAX_MID_CAPACITY,
    MAX_SINK_FRAMES,
    MAX_TOP_K,
    POLICIES,
    RECACHE_MODES,
    PackForcingConfig,
)
from packforcing.memory import PAPER_FPS, PAPER_HEIGHT, PAPER_SECONDS, PAPER_WIDTH
from visualizers import empty_figure

from . import sessions
from .callbacks import (
    Studio,
    ablate,
    arm_ablation,
    arm_generate,
    arm_lesson,
    end_session,
    generate,
    on_replay_scrub,
    on_trace_upload,
    run_lesson,
    stopper,
)
from .handlers import ablation_presets, calculator
from .lessons import LESSONS
from .live import camera_controls, camera_note, steerer, switch_prompt

PANEL_HELP = {
    "occupancy": "Top: tokens each block attends, by partition, under the dashed bounded context, which never grows. "
                 "Below: archived mid blocks, held in memory (compressed) but not attended.",
    "selection": "Each row is a generated block, each column a compressed mid block. Colour = how much the current "
                 "queries want that block; squares = the top-k actually attended. Old blocks keep getting picked: "
                 "attention demand spans the whole history. The title's selection change: the share of selected blocks "
                 "that are new since the block before (swaps can flicker).",
    "rope": "Keys are cached already rotated at the time they were generated. Before attending, selected blocks are "
            "moved (rotated in time) so that sink, mid and recent sit side by side before the current block: the gaps "
            "left by unselected or evicted blocks close.",
    "camera": "Bars show where each block was filmed on the wrapping panorama, coloured by the partition that holds it "
              "now; the band is where the camera looks. When it comes back to a place, the mid-bank block that filmed "
              "it should turn orange (attended).",
    "memory": "Bytes of K/V actually held by this run vs a full cache. Below: the same policies for the real "
              "Wan2.1-1.3B at 832x480 (about 4 GB vs 138 GB at 120 s).",
}


def _model_note() -> str:
    lines = []
    for name, entry in registry.entries().items():
        reason = entry.unavailable()
        lines.append(f"- **{name}**: {entry.description}; "
                     + ("available" if reason is None else f"unavailable ({reason})"))
    return "\n".join(lines)


def _defaults_for(model):
    c = registry.get(model).default_config
    return c.sink_frames, c.top_k, c.mid_capacity, c.policy, c.rope_repair, c.compression, c.recache


def _examples(model: str) -> list[str]:
    """The default model's example prompts, else every model's."""
    own = registry.get(model).examples
    return list(own or [p for e in registry.entries().values() for p in e.examples])


def build_demo() -> gr.Blocks:
    usable = [name for name, reason in registry.available_models().items() if reason is None]
    model0 = registry.default_model()
    examples = _examples(model0)
    with Studio(title="PackForcing Studio", delete_cache=(600, sessions.RUN_FILES_TTL)) as demo:
        gr.Markdown(
            "# PackForcing Studio\nLong streaming video with a **bounded KV cache**: a full-resolution **sink**, "
            "a **compressed mid bank** searched by **top-k selection**, and the **recent** block — with RoPE packing "
            "so the model never sees the gaps. "
            "Type a prompt, press Generate, and watch the memory work block by block."
        )
        with gr.Tab("Generate"):
            _generate_tab(usable, model0, examples)
        with gr.Tab("Ablation"):
            _ablation_tab(usable, model0, examples)
        with gr.Tab("Memory calculator"):
            _calculator_tab(demo)
        with gr.Tab("Trace replay"):
            _replay_tab()
        demo.unload(end_session)
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo


def _cache_controls(config) -> list:
    """Sink, top-k, capacity, policy, RoPE repair, compression, re-cache: the model's defaults."""
    with gr.Accordion("Advanced: the cache", open=False):
        controls = [
            gr.Slider(0, MAX_SINK_FRAMES, value=config.sink_frames, step=config.block_frames,
                      label="Sink frames (latent frames, multiple of 4)"),
            gr.Slider(0, MAX_TOP_K, value=config.top_k, step=1, label="Top-k mid blocks attended"),
            gr.Slider(0, MAX_MID_CAPACITY, value=config.mid_capacity, step=1,
                      label="Mid-bank capacity (compressed blocks)"),
            gr.Radio(list(POLICIES), value=config.policy, label="Selection policy"),
            gr.Checkbox(value=config.rope_repair, label="RoPE repair (pack attended blocks in time)"),
            gr.Radio(list(COMPRESSIONS), value=config.compression, label="Compression"),
            # custom values pass: the app checks them itself, with a plain message (Gradio's
            # own check would answer an API call with a Python type)
            gr.Dropdown(list(RECACHE_MODES), allow_custom_value=True, value=config.recache,
                        label="Re-cache on a prompt switch (blocks re-written under the new prompt)",
                        elem_id="recache"),
        ]
        gr.Markdown(_model_note())
    return controls


def _panels(camera: bool) -> tuple[list, gr.Column]:
    """The five trace panels of a run, each with its explanation, and the camera panel's
    column (shown only for a model with a camera)."""
    plots = []
    for row in ((("occupancy", "Occupancy"), ("selection", "Top-k selection")),
                (("rope", "RoPE offsets"), ("memory", "KV memory")),
                (("camera", "Camera and memory"),)):
        with gr.Row():
            for key, label in row:
                with gr.Column(visible=camera or key != "camera", elem_id=f"column-{key}") as column:
                    plots.append(gr.Plot(empty_figure(), label=label, elem_id=f"panel-{key}"))
                    gr.Markdown(PANEL_HELP[key])
    return plots, column


def _generate_tab(usable: list[str], model0: str, examples: list[str]) -> None:
    entry0 = registry.get(model0)
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", value=examples[0], lines=2, max_lines=4, elem_id="prompt")
            gr.Examples(examples, inputs=prompt, label="Examples (click one)")
            with gr.Row():
                seconds = gr.Slider(1, entry0.max_seconds, value=16, step=1, label="Duration (seconds)",
                                    elem_id="seconds")
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
            model = gr.Dropdown(usable, value=model0, label="Model", elem_id="model")
            cache = _cache_controls(entry0.default_config)
            note = camera_note(model0)
            camera = gr.Textbox(label="Camera path", value="", max_lines=1, elem_id="camera-path", visible=not note,
                                placeholder="e.g. right:8,left:8 (direction:seconds; empty: the prompt's pan)")
            no_camera = gr.Markdown(note, visible=bool(note), elem_id="no-camera")
            with gr.Row():
                go_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                # while a run streams: edit the prompt, Switch, and it applies from the next block
                switch_btn = gr.Button("Switch prompt", elem_id="switch")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Row():
                # steer the next block while the video streams
                steer_btns = {d: gr.Button(label, elem_id=f"camera-{d}", size="sm", visible=not note)
                              for d, label in (("left", "← left"), ("still", "■ still"), ("right", "right →"))}
            status = gr.Markdown("Ready.", elem_id="status")
            switch_status = gr.Markdown(elem_id="switch-status")
        with gr.Column(scale=3):
            with gr.Row():
                video = gr.Video(label="Streaming video", streaming=True, autoplay=True, elem_id="stream")
                preview = gr.Image(label="Newest frame", elem_id="preview", height=256)
            narration = gr.Markdown("What the cache does at each block is told here while the video streams.",
                                    elem_id="narration")
            with gr.Row():
                final = gr.File(label="Finished video (mp4)", elem_id="final")
                trace = gr.File(label="Trace (JSONL, replay it in the Trace tab)", elem_id="trace")
    (occupancy, selection, rope_plot, memory, camera_plot), camera_column = _panels(not note)
    model.change(_defaults_for, model, cache)
    model.change(camera_controls, model, [camera, *steer_btns.values(), camera_column, no_camera], queue=False)
    outputs = [video, preview, occupancy, selection, rope_plot, memory, status, final, trace, camera_plot, narration]
    # Submitting arms a stop flag (the validator) before the run is queued: a Stop while it
    # waits keeps it from starting; a Stop while it runs ends it after the block in flight,
    # with its video and trace so far. So does a closed tab (unload, in build_demo).
    *knobs, recache = cache
    go_btn.click(generate, [model, prompt, seconds, seed, *knobs, camera, recache], outputs,
                 concurrency_limit=1, concurrency_id="gpu", api_name="generate", validator=arm_generate)
    switch_btn.click(switch_prompt, [prompt], switch_status, queue=False, api_name="switch")
    for direction, btn in steer_btns.items():
        btn.click(steerer(direction), None, switch_status, queue=False, api_name=f"steer_{direction}")
    stop_btn.click(stopper("generate"), None, None, queue=False, api_name="stop")


def _ablation_tab(usable: list[str], model0: str, examples: list[str]) -> None:
    gr.Markdown(
        "Two memory configurations, the **same prompt and seed**, generated side by side. On the embedded model the "
        "camera comes back to the same place every 8 s: watch which configuration remembers what it showed. "
        "The table at the end scores both videos from their pixels."
    )
    presets = list(ablation_presets(model0))
    with gr.Row():
        a_prompt = gr.Textbox(label="Prompt", value=examples[0], lines=1, scale=3, elem_id="ablation-prompt")
        a_seconds = gr.Slider(1, registry.get(model0).max_seconds, value=24, step=1, label="Duration (seconds)",
                              scale=2, elem_id="ablation-seconds")
        a_seed = gr.Number(value=0, precision=0, label="Seed", scale=1)
        a_model = gr.Dropdown(usable, value=model0, label="Model", scale=1)
    with gr.Row():
        preset_a = gr.Dropdown(presets, value="window", label="Left", elem_id="preset-a")
        preset_b = gr.Dropdown(presets, value="dynamic", label="Right", elem_id="preset-b")
    with gr.Row():  # compare re-cache on vs off: the two re-cache presets and a switch
        switch_to = gr.Textbox(label="Switch to (optional: both sides switch the prompt)", value="", max_lines=1,
                               scale=3, elem_id="ablation-switch-to")
        switch_at = gr.Number(value=8, label="Switch at (seconds)", scale=1, elem_id="ablation-switch-at")
    with gr.Row():
        a_go = gr.Button("Run both", variant="primary", elem_id="ablation-run")
        a_stop = gr.Button("Stop", variant="stop")
    a_status = gr.Markdown("Ready.", elem_id="ablation-status")
    side_outputs = []
    with gr.Row():
        for side in ("a", "b"):
            with gr.Column():
                with gr.Row():
                    side_video = gr.Video(label="Streaming video", streaming=True, autoplay=True,
                                          elem_id=f"ablation-stream-{side}")
                    side_preview = gr.Image(label="Newest frame", height=200, elem_id=f"ablation-preview-{side}")
                side_narration = gr.Markdown(elem_id=f"ablation-narration-{side}")
                plots = [gr.Plot(empty_figure(), label=label, elem_id=f"ablation-{key}-{side}")
                         for key, label in (("occupancy", "Occupancy"), ("selection", "Top-k selection"),
                                            ("rope", "RoPE offsets"), ("memory", "KV memory"))]
                side_outputs += [side_video, side_preview, *plots, side_narration]
    comparison = gr.Markdown(elem_id="ablation-table")
    _lessons((a_model, a_prompt, a_seconds, a_seed), side_outputs + [a_status, comparison, preset_a, preset_b])
    a_go.click(ablate, [a_model, a_prompt, a_seconds, a_seed, preset_a, preset_b, switch_at, switch_to],
               side_outputs + [a_status, comparison], concurrency_limit=1, concurrency_id="gpu", api_name="ablate",
               validator=arm_ablation)
    a_stop.click(stopper("ablation"), None, None, queue=False, api_name="stop_ablation")


def _lessons(inputs: tuple, outputs: list) -> None:
    """One button per lesson: it runs the lesson's pair with the prompt, duration and seed
    above; the text says what to watch, then what the pair measured."""
    gr.Markdown("**Lessons**: one click runs the pair of configurations that shows one mechanism.")
    with gr.Row():
        buttons = [(lesson, gr.Button(lesson.title, size="sm", elem_id=f"lesson-{i}"))
                   for i, lesson in enumerate(LESSONS)
                   if not lesson.camera or any(e.camera for e in registry.entries().values())]
    text = gr.Markdown(elem_id="lesson")
    for lesson, button in buttons:
        title = gr.State(lesson.title)
        button.click(run_lesson, [title, *inputs], [*outputs, text], concurrency_limit=1, concurrency_id="gpu",
                     validator=arm_lesson)


def _calculator_tab(demo: gr.Blocks) -> None:
    paper = PackForcingConfig()
    gr.Markdown("Tokens and bytes of the cache for any video, no model needed. Defaults are the paper's: "
                f"{PAPER_WIDTH}x{PAPER_HEIGHT}, {PAPER_FPS} FPS, {PAPER_SECONDS:g} s.")
    with gr.Row():
        inputs = [
            gr.Number(PAPER_WIDTH, precision=0, label="Width"),
            gr.Number(PAPER_HEIGHT, precision=0, label="Height"),
            gr.Number(PAPER_FPS, precision=0, label="FPS"),
            gr.Number(PAPER_SECONDS, label="Seconds"),
            gr.Number(paper.sink_frames, precision=0, label="Sink frames"),
            gr.Number(paper.top_k, precision=0, label="Top-k"),
            gr.Number(paper.mid_capacity, precision=0, label="Mid capacity"),
        ]
    c_btn = gr.Button("Compute")
    with gr.Row():
        c_table = gr.Markdown(elem_id="calc-table")
        c_plot = gr.Plot(label="KV cache by policy", elem_id="calc-plot")
    c_btn.click(calculator, inputs, [c_table, c_plot], queue=False)
    demo.load(calculator, inputs, [c_table, c_plot], queue=False)


def _replay_tab() -> None:
    gr.Markdown("Upload a trace (from the Generate tab or `python -m packforcing generate --trace`) and scrub "
                "through it block by block. No model runs.")
    events_state = gr.State([])
    with gr.Row():
        upload = gr.File(label="trace .jsonl", file_types=[".jsonl", ".json", ".txt"], elem_id="trace-upload")
        with gr.Column():
            r_msg = gr.Markdown(elem_id="replay-status")
            slider = gr.Slider(0, 1, value=0, step=1, label="Block", elem_id="replay-block")
            r_narration = gr.Markdown(elem_id="replay-narration")
    with gr.Row():
        r_occ, r_sel = gr.Plot(empty_figure("Upload a trace")), gr.Plot(empty_figure("Upload a trace"))
    with gr.Row():
        r_rope, r_mem = gr.Plot(empty_figure("Upload a trace")), gr.Plot(empty_figure("Upload a trace"))
    # Both go through the queue (their own slot, beside the model's): a trace is checked
    # before anything is drawn, so each costs in proportion to its blocks.
    upload.upload(on_trace_upload, upload, [events_state, slider, r_msg, r_occ, r_sel, r_rope, r_mem, r_narration],
                  concurrency_limit=2, concurrency_id="replay", api_name="load_trace")
    slider.change(on_replay_scrub, [events_state, slider], [r_occ, r_sel, r_rope, r_mem, r_narration],
                  concurrency_limit=2, concurrency_id="replay", trigger_mode="always_last", api_name="replay")
