"""Adapters: one module per external system, the only place its SDK is imported.

``build_adapters`` gives the engine what the runbooks use; the Kubernetes, AWS, MongoDB and
PagerDuty adapters join it in their issues.
"""

from __future__ import annotations

from runbooks.engine.config import Config
from runbooks.engine.plan import Adapters


def build_adapters(config: Config) -> Adapters:
    """Create the adapters for this configuration (lazily; nothing connects yet)."""
    del config  # used once the first adapter lands
    return Adapters()
