"""KV-cache lab (issue 16): real K/V captured from llama-server, parsed per layer."""
