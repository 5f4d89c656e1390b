"""A request's life: journal, requests, locks, decisions, runner (composed in engine.py)."""
