"""Reports rendered from the engine's records (the drill report)."""
