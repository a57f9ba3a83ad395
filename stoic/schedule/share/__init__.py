"""Share mode: one batch split across the edge and pods (pure board and forecast; the
asyncio session that drives them)."""
