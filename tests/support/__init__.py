"""Shared test support: the sandbox's people, crash-injecting stores, synchronous spawning."""
