"""Calls: build the upstream request from a plan, send it, map the response to a tool result."""
