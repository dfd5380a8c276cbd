"""A model across several boards: llama.cpp's RPC backend (rpc-server workers, --rpc on the head)."""
