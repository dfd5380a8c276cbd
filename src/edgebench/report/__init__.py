"""Report: markdown + one self-contained HTML page (Jinja2) with inline SVG plots (matplotlib)."""

from __future__ import annotations

from edgebench.report.render import SECTION_IDS, render_report

__all__ = ["SECTION_IDS", "render_report"]
