"""One kind of background worker (runbooks/engine/workers.py): a round, a pause, a failure
logged once per kind, a lease given back at the end, every worker stopped together."""

from __future__ import annotations

import threading
from typing import Any

from runbooks.engine.errors import StoreFull
from runbooks.engine.workers import Worker, Workers
from tests.support.waiting import wait_for


class Recorded:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))

    def exception(self, event: str, **fields: Any) -> None:
        self.lines.append(("exception", event, fields))


def test_a_full_store_is_said_once_until_it_recovers_and_other_failures_each_time() -> None:
    log = Recorded()
    rounds: list[int] = []
    outcomes: list[Exception | None] = [
        StoreFull("state.db"),
        StoreFull("state.db"),
        StoreFull("state.db"),
        None,
        StoreFull("state.db"),
        RuntimeError("boom"),
        RuntimeError("boom"),
    ]
    done = threading.Event()

    def step() -> None:
        rounds.append(len(rounds))
        if len(rounds) > len(outcomes):
            done.set()
            return
        failure = outcomes[len(rounds) - 1]
        if failure is not None:
            raise failure

    released = threading.Event()
    worker = Worker("sweeper", step, lambda: 0.0, log=log, finish=released.set, what="housekeeping")
    workers = Workers([worker])
    workers.start_all()
    wait_for(done.is_set, what="every round")
    workers.stop_all(timeout=60)
    assert not worker.thread.is_alive()
    assert released.is_set()  # the lease is given back at the end
    assert [(kind, event) for kind, event, _ in log.lines] == [
        ("error", "state store full"),
        ("error", "state store full"),  # said again after it recovered
        ("exception", "housekeeping failed"),
        ("exception", "housekeeping failed"),
    ]
    assert log.lines[0][2] == {"where": "housekeeping", "error": StoreFull("state.db").message}


def test_stop_all_wakes_a_worker_from_its_pause_and_a_disabled_one_never_starts() -> None:
    log = Recorded()
    first_round = threading.Event()
    sleeper = Worker("sleeper", first_round.set, lambda: 3600.0, log=log)
    idle = Worker("idle", lambda: None, lambda: 1.0, log=log, enabled=False)
    workers = Workers([sleeper, idle])
    workers.start_all()
    wait_for(first_round.is_set, what="the sleeper's first round")
    assert not idle.thread.is_alive() and idle.thread.ident is None
    workers.stop_all(timeout=60)  # an hour's pause: only the wake ends it
    assert not sleeper.thread.is_alive()
    workers.stop_all(timeout=60)  # twice is harmless (a signal, then the server's end)
    assert log.lines == []
