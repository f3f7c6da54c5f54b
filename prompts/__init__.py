"""Jinja2 templates shipped with ked: knowledge-generation prompts and text views."""

from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent
