"""The gateway: an OpenAI-compatible API over the routing table (`edgebench serve`)."""
