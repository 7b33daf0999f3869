"""Nanobanana: a self-hostable image studio on Hugging Face diffusers."""

__version__ = "0.1.0"
