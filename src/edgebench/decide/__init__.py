"""Decide: rank models by quality × speed with CIs, draw the model map and the routing table."""
