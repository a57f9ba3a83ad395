"""What a function call answers, the real function's and the stand-in's alike: the
daemon reads these timings whichever one ran."""

from __future__ import annotations

TIMINGS = frozenset(
    {"download_s", "model_load_s", "decode_s", "processing_s", "input_wait_s", "total_s"}
)
