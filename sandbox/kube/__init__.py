"""A Kubernetes API emulator for the sandbox and the tests (see emulator.py)."""
