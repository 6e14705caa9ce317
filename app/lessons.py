"""One-click lessons: each runs the pair of configurations that shows one mechanism, on the
same prompt and seed, through the ablation view's runner, and ends with the difference
measured on the runs just made (visualizers.lessons; never numbers written in advance)."""

from __future__ import annotations

from dataclasses import dataclass

from packforcing import registry
from visualizers.lessons import difference

from .handlers import AblationRun, plain


@dataclass(frozen=True)
class Lesson:
    title: str
    a: str  # the ablation presets of the left and right side
    b: str
    watch: str  # two sentences: what differs and what to watch
    measure: str  # what visualizers.lessons.difference measures
    row: str | None = None  # the evaluator's comparison row that shows the effect, when the model has one
    switch: bool = False  # both sides switch to another prompt halfway
    camera: bool = False  # needs a model with a camera


LESSONS = (
    Lesson("The sink", "dynamic", "dynamic, no sink",
           "Both sides keep the same mid bank and recent block; only the left keeps the first frames at full "
           "resolution (the sink). Watch whether the right video drifts away from the scene it began with.",
           "sink", "drift (first − last loop)"),
    Lesson("Dynamic vs FIFO selection", "dynamic", "fifo",
           "FIFO attends the newest mid blocks whatever the queries want; dynamic scores every mid block and attends "
           "the best. Watch the top-k panels: dynamic reaches back into the history, FIFO stays on the newest blocks.",
           "reach", "revisit consistency"),
    Lesson("A camera that comes back: dynamic vs window", "dynamic", "window",
           "The camera returns to a place it filmed; dynamic can attend the mid block that filmed it, the window has "
           "dropped it. Watch the camera panels when the band crosses an old bar.",
           "reach", "revisit source attended (block one loop back)", camera=True),
    Lesson("RoPE repair on vs off", "dynamic", "dynamic, no RoPE repair",
           "Both sides attend the same kind of blocks; with repair off, their keys keep their original times and the "
           "model sees gaps it never met in training. Watch the RoPE panels: arrows close the gaps on the left only.",
           "rope", "prompt faithfulness"),
    Lesson("A prompt switch: re-cache vs none", "dynamic, re-cache all", "dynamic, no re-cache",
           "Both sides switch to the same new prompt halfway; the left re-writes its cached K/V under the new prompt, "
           "the right keeps keys written under the old one. Watch how soon each video follows the new prompt.",
           "recache", "faithfulness to the new prompt, after the switch", switch=True),
)


def lessons_for(model: str) -> list[Lesson]:
    """The lessons a model can run (the camera lesson needs a camera)."""
    entry = registry.entries().get(model)
    return [lesson for lesson in LESSONS if not lesson.camera or (entry is not None and entry.camera)]


def find(title, model) -> Lesson:
    lesson = next((lesson for lesson in lessons_for(model) if lesson.title == title), None)
    if lesson is None:
        names = "; ".join(lesson.title for lesson in lessons_for(model))
        raise ValueError(f"lesson {plain(str(title)[:40])} is not one this model can run; choose one of: {names}")
    return lesson


def switch_prompt_for(model: str, prompt: str) -> str:
    """The prompt a switch lesson changes to: another of the model's examples."""
    others = [p for p in registry.get(model).examples if p != prompt]
    return others[0] if others else "a green square"


def pair(lesson: Lesson, model, prompt, seconds, seed, stop) -> AblationRun:
    """The lesson's two runs, on the ablation view's runner (switching halfway when it asks)."""
    switch_to = (switch_prompt_for(model, prompt)
                 if lesson.switch and isinstance(model, str) and model in registry.entries() else "")
    half = float(seconds) / 2 if isinstance(seconds, (int, float)) else 0.0
    return AblationRun(model, prompt, seconds, seed, lesson.a, lesson.b, stop, switch_at=half, switch_to=switch_to)


def explain(lesson: Lesson, lab: AblationRun | None = None) -> str:
    """Markdown: the lesson, what to watch, and (once the pair has ended) what it measured."""
    text = f"**{plain(lesson.title)}** ({plain(lesson.a)} vs {plain(lesson.b)}): {plain(lesson.watch)}"
    if lab is None:
        return text
    measured = difference(lesson.measure, lab.runs[0].events, lab.runs[1].events, lab.names)
    rows = lab.rows
    if lesson.row and len(rows) == 2 and lesson.row in rows[0] and lesson.row in rows[1]:
        measured += (f" {lesson.row[:1].upper()}{lesson.row[1:]}: {rows[0][lesson.row]} ({lab.names[0]})"
                     f" vs {rows[1][lesson.row]} ({lab.names[1]}).")
    return text + "\n\n" + plain(measured) if measured else text
