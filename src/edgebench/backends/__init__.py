"""Backends: one OpenAI-compatible client for every server (managed llama-server, rkllama, Ollama, vLLM)."""
