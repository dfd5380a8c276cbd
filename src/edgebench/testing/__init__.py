"""Helpers for edgebench's own tests: synthetic GGUF models that real llama.cpp can run."""

from __future__ import annotations

from edgebench.testing.synth import FType, tiny_vocab, write_tiny_llama

__all__ = ["FType", "tiny_vocab", "write_tiny_llama"]
