"""Nanobanana as a Hugging Face Space (or locally): `python app.py`, then open http://127.0.0.1:7860.

Configuration: configs/ui.yaml (the app), configs/service.yaml (credits, storage, privacy) and
configs/generation.yaml (the model), each overridable from the environment (see README).
"""

import logging
import os

# Before gradio is imported: no analytics calls unless the operator turns them on.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from nanobanana.service.build import build_studio
from nanobanana.web.app import create_app, serve
from nanobanana.web.config import load_ui_config


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_ui_config()
    studio = build_studio()
    studio.warm_up()  # the model and the safety models load now, not on the first click
    serve(create_app(studio, config), config)


if __name__ == "__main__":
    main()
