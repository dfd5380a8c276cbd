"""edgebench: which local LLM stack works on THIS machine — measured, ranked, routed, served."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
