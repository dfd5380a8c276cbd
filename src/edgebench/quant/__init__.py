"""Quantization recipes: mixed per-tensor llama-quantize types for a RAM budget, sized exactly before
quantizing, applied with the llama.cpp build, and verified by measurement (issue 17)."""
