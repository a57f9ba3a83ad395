"""Probing in the background: the inquisitor, and which runtimes may be scheduled."""
