"""Plotly figures drawn from PackForcing trace events (pure functions; no gradio, no torch)."""

from .panels import (
    PARTITION_COLORS,
    calculator_figure,
    empty_figure,
    figures_at,
    memory_figure,
    occupancy_figure,
    rope_figure,
    selection_figure,
)

__all__ = ["PARTITION_COLORS", "calculator_figure", "empty_figure", "figures_at", "memory_figure", "occupancy_figure",
           "rope_figure", "selection_figure"]
