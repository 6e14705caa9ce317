"""python app.py: the PackForcing studio (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT respected)."""

from app.ui import build_demo

demo = build_demo()

if __name__ == "__main__":
    demo.launch(show_error=True)
