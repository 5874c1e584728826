"""``kubetune report``: one self-contained HTML file (and optionally PNG images) from an experiment's results."""

from __future__ import annotations

from .html import Report, build

__all__ = ["Report", "build"]
