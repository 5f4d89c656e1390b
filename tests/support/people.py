"""The sandbox's people (config/policy.yaml) as actors, once for every test."""

from __future__ import annotations

from runbooks.engine.models import Actor

ALICE = Actor("alice", "Alice", "cli")  # sre
BOB = Actor("bob", "Bob", "slack")  # sre
DAVE = Actor("dave", "Dave", "cli")  # sre
CAROL = Actor("carol", "Carol", "cli")  # developers
SCHEDULER = Actor("scheduler", "scheduler", "scheduler")
