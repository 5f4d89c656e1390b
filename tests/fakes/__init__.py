"""Fakes of ``runbooks.interfaces`` for fast planner tests (no emulator, no network).

They hold state in plain dicts and implement only what planners read; a missing object
raises ``InfrastructureError`` as the adapters do, and an operation a fake does not implement
raises ``NotImplementedError``, so a test cannot pass by accident through it. The emulator tests
(tests/runbooks/) stay the integration layer.
"""
