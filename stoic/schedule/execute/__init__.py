"""Executing a plan on runtime backends: the requester, the measured legs, the race."""
