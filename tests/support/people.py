"""The sandbox's people (config/policy.yaml) as actors, once for every test."""

from __future__ import annotations

from runbooks.engine.models import Actor, Origin

ALICE = Actor("alice", "Alice", Origin.CLI)  # sre
BOB = Actor("bob", "Bob", Origin.SLACK)  # sre
DAVE = Actor("dave", "Dave", Origin.CLI)  # sre
CAROL = Actor("carol", "Carol", Origin.CLI)  # developers
SCHEDULER = Actor("scheduler", "scheduler", Origin.SCHEDULER)
