"""The Gradio studio of PackForcing."""
