"""Model files: what a GGUF says about itself (architecture, size, quantization, layer layout)."""

from __future__ import annotations

from edgebench.models.gguf import ModelInfo, read_model_info, sha256_file

__all__ = ["ModelInfo", "read_model_info", "sha256_file"]
