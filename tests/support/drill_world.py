"""A drill scheduler world on a fake clock: its configuration, start and end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runbooks.engine.background.supervisor import Supervisor
from runbooks.engine.clock import FakeClock
from runbooks.engine.config.loader import Config, load_config
from runbooks.engine.config.policy_file import PolicyFile
from runbooks.engine.config.schedules import SchedulesFile
from runbooks.engine.engine import Engine
from runbooks.engine.requesters.drills import DrillScheduler
from tests.conftest import ROOT, EngineFactory

START = datetime(2027, 1, 1, tzinfo=UTC).timestamp()


END = datetime(2028, 1, 1, tzinfo=UTC).timestamp()


def config(
    *drills: dict[str, Any], freezes: list[dict[str, Any]] | None = None, approvals: int = 0
) -> Config:
    base = load_config(ROOT / "config")
    policy = base.policy.model_dump()
    policy["people"]["scheduler"] = {"name": "drill scheduler", "groups": ["drills"]}
    gate = {"approvals": approvals, "approvers": ["sre"]} if approvals else {}
    policy["rules"] = [
        {"runbooks": "test.*", "environments": ["*"], "requesters": ["drills", "sre"], **gate},
        *policy["rules"],
    ]
    if freezes is not None:
        policy["freezes"] = freezes
    return Config(
        base.directory,
        base.environments,
        PolicyFile.model_validate(policy),
        SchedulesFile.model_validate({"drills": list(drills)}),
    )


class World:
    def __init__(
        self, make_engine: EngineFactory, cfg: Config, clock: FakeClock, **overrides: Any
    ) -> None:
        """``overrides``: the engine's (a registry with readiness checks, say)."""
        self.clock = clock
        self.engine: Engine = make_engine(config=cfg, clock=clock, **overrides)
        self.scheduler = DrillScheduler(self.engine, cfg.schedules, owner="bot-1")
        self.supervisor = Supervisor(self.engine, spawn=lambda _name, work: work())
        self.announced: list[tuple[float, str]] = []

    def step(self) -> None:
        """One pass of the bot's leader: fire what is due, run what is approved, report."""
        for _ in range(2):
            done = self.scheduler.tick()
            self.announced += [(self.clock.now(), text) for text in done.announced]
            self.supervisor.sweep()

    def run_until(self, end: float) -> None:
        while True:
            wake = self.scheduler.next_wake(cap=float("inf"))
            if wake >= end:
                return
            self.clock.advance(max(0.0, wake - self.clock.now()))
            self.step()
