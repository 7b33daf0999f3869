"""The web app: the Gradio page, its routes and the guards every request passes."""
