"""The drill scheduler on the real clock: fire lateness and leader takeover.

1. Lateness: the bot's ``DrillTicker`` (the thread the bot runs) with a drill that fires
   every second (a test schedule: cron has minute resolution, so the bench's drill computes
   its own fire times) for ``--fires`` fires; lateness = when the fire was recorded minus
   when it was due. p50 and p99; goal p99 under 1 s.
2. Takeover: two schedulers on one SQLite store, each its own engine and owner. The leader
   stops without releasing its lease (a crash); the other, ticking as the bot does, fires
   the next one. Time from the crash to that fire; goal within lease + renew (15 s + 10 s).

    python bench/drills_bench.py [--fires N]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.server import DrillTicker  # noqa: E402
from runbooks.catalog import load_catalog  # noqa: E402
from runbooks.engine.config.schedules import Drill, SchedulesFile  # noqa: E402
from runbooks.engine.requesters.drills import DrillScheduler  # noqa: E402
from runbooks.engine.settings import load_settings  # noqa: E402
from runbooks.engine.wiring import Runtime, open_runtime  # noqa: E402
from runbooks.engine.workers import Workers  # noqa: E402


class EverySecond(Drill):
    """A test drill due at every whole second."""

    def fires_after(self, after: float) -> Iterator[float]:
        at = math.floor(after) + 1.0
        while True:
            yield at
            at += 1.0


def drill() -> EverySecond:
    return EverySecond(
        name="every-second",
        runbook="selftest",
        params={"environment": "development"},
        cron="* * * * *",
        notify_before=[],
        overlap="skip",
    )


def runtime(state: Path) -> Runtime:
    os.environ.update(
        RUNBOOK_BOT_STATE=str(state),
        RUNBOOK_BOT_CONFIG=str(ROOT / "config"),
        RUNBOOK_BOT_AUDIT_KEY="bench-audit-key-0123456789abcdef",
        RUNBOOK_BOT_LOG=str(state.parent / "log.jsonl"),
    )
    rt = open_runtime(load_settings(), registry=load_catalog())
    object.__setattr__(rt.config, "schedules", SchedulesFile(drills=[drill()]))
    return rt


def lateness(fires: int, directory: Path) -> None:
    rt = runtime(directory / "lateness.db")
    ticker = DrillTicker(rt)
    ticker.scheduler.schedules = rt.config.schedules
    ticker.start()
    time.sleep(fires + 1.5)
    Workers([ticker]).stop_all(timeout=5)
    history = ticker.scheduler.history("every-second")
    late = sorted(float(e["updated_at"]) - float(e["at"]) for e in history)[-fires:]
    p50 = statistics.median(late)
    p99 = late[min(len(late) - 1, math.ceil(0.99 * len(late)) - 1)]
    print(f"lateness over {len(late)} fires: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    rt.close()


def takeover(directory: Path) -> None:
    leader_rt = runtime(directory / "takeover.db")
    leader_rt.engine.owner = "bot-1"
    leader = DrillScheduler(leader_rt.engine, leader_rt.config.schedules, owner="bot-1")
    follower_rt = runtime(directory / "takeover.db")
    follower_rt.engine.owner = "bot-2"
    ticker = DrillTicker(follower_rt)
    ticker.scheduler = DrillScheduler(
        follower_rt.engine, follower_rt.config.schedules, owner="bot-2"
    )
    crashed = threading.Event()

    def lead() -> None:
        while not crashed.is_set():
            leader.tick()
            time.sleep(0.2)

    thread = threading.Thread(target=lead, daemon=True)
    thread.start()
    time.sleep(3)
    ticker.start()
    time.sleep(2)
    crashed.set()  # the leader dies holding its lease
    died = time.time()
    thread.join()
    fired_by_two: Any = None
    while fired_by_two is None and time.time() - died < 60:
        time.sleep(0.1)
        for entry in ticker.scheduler.history("every-second"):
            if float(entry["updated_at"]) > died:
                fired_by_two = entry
                break
    Workers([ticker]).stop_all(timeout=5)
    took = float(fired_by_two["updated_at"]) - died if fired_by_two else float("nan")
    print(f"takeover: the other scheduler fired {took:.1f} s after the leader died (lease 15 s)")
    leader_rt.close()
    follower_rt.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fires", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lateness(args.fires, Path(tmp))
        takeover(Path(tmp))


if __name__ == "__main__":
    main()
