"""Measurement stages: each reads earlier stages from the store and writes its own rows."""
