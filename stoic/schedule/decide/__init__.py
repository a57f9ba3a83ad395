"""Deciding: pure functions from estimates to a plan (no I/O, no asyncio)."""
