"""The only place that knows llama.cpp binaries and flags (locate, build, flags, bench, proc)."""
