"""Backups for restore tests: the sandbox's databases, a taken backup, a run's output."""

from __future__ import annotations

from typing import Any

import pymongo

from runbooks.engine import Engine
from runbooks.engine.models import Execution, State
from sandbox import appdata
from sandbox.mongo import MongoServer
from tests.support.people import ALICE


class Databases:
    def __init__(self) -> None:
        self.source = MongoServer(name="production").start()
        self.scratch = MongoServer(name="restore-scratch").start()
        appdata.seed(self.source, "production")

    def client(self, server: MongoServer) -> pymongo.MongoClient[dict[str, Any]]:
        return pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000)

    def scratch_databases(self) -> list[str]:
        with self.client(self.scratch) as client:
            return [n for n in client.list_database_names() if n.startswith("restore_test_")]

    def stop(self) -> None:
        self.source.stop()
        self.scratch.stop()


def output(execution: Execution) -> str:
    return "\n".join(line for step in execution.steps for line in step.output)


def run(engine: Engine, name: str, **params: Any) -> Execution:
    prepared = engine.prepare(name, params, actor=ALICE)
    execution = engine.submit(prepared, actor=ALICE)
    assert execution.state != State.AWAITING_APPROVAL  # policy: restore.* needs none
    return engine.start(execution.id, actor=ALICE)


def take_backup(engine: Engine, prefix: str) -> str:
    done = run(engine, "restore.backup", environment="production", prefix=prefix)
    assert done.state == State.SUCCEEDED, done.error
    return prefix
