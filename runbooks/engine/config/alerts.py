"""``config/alerts.yaml``'s schema: Alertmanager alerts mapped to a runbook and its parameters.

Only the file's shape lives here (the floor of the engine); the intake that acts on alerts is
``runbooks.engine.requesters.alerts``, which imports this module, never the reverse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runbooks.engine.config.yaml_files import Seconds, load_optional_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertRoute(_Strict):
    alerts: list[str] = Field(min_length=1, description="alert names (the alertname label)")
    runbook: str
    params: dict[str, Any] = Field(default_factory=dict)
    #: Only alerts whose rendered environment matches one of these (default: any).
    environments: list[str] = Field(default_factory=lambda: ["*"])


class AlertsFile(_Strict):
    """``config/alerts.yaml``."""

    require_auth: bool = True
    cooldown: Seconds = 1800.0
    max_consecutive: int = Field(2, ge=1, le=20)
    streak_window: Seconds = 21600.0
    routes: list[AlertRoute] = Field(default_factory=list)

    @field_validator("routes")
    @classmethod
    def _unique_alerts(cls, routes: list[AlertRoute]) -> list[AlertRoute]:
        seen: set[str] = set()
        for route in routes:
            for name in route.alerts:
                if name in seen:
                    raise ValueError(f"alert {name!r} is mapped twice; one route per alert")
                seen.add(name)
        return routes

    def route(self, name: str) -> AlertRoute | None:
        return next((r for r in self.routes if name in r.alerts), None)


def load_alerts(path: Path) -> AlertsFile:
    """Read ``alerts.yaml`` (a missing file maps no alert)."""
    return load_optional_file(path, AlertsFile)
