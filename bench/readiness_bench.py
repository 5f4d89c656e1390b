"""One full readiness evaluation of the sandbox's environments: wall time, provider calls,
and no write call.

Starts the sandbox as ``python -m sandbox up`` does, in this process (the Kubernetes emulators,
moto seeded, the Atlas API and wire servers, the MongoDB wire servers with a backup of each
environment, /health and its Prometheus emulator, Slack and PagerDuty), exports its env file,
then runs ``Engine.readiness`` over every environment and every check (the runbooks' own,
credentials and reach, drill evidence) as ``readiness.check`` does, ``--runs`` times (the
first warms the clients). Provider calls are counted from the emulators' own logs, writes from
their write logs (Kubernetes, moto, Atlas and every wire server). Goal: under 5 s, no write.

    python bench/readiness_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runbooks.adapters import LiveInfrastructure  # noqa: E402
from runbooks.catalog import load_catalog  # noqa: E402
from runbooks.engine.audit import AuditLog  # noqa: E402
from runbooks.engine.clock import SystemClock  # noqa: E402
from runbooks.engine.config.loader import load_config  # noqa: E402
from runbooks.engine.engine import Engine  # noqa: E402
from runbooks.engine.logs import configure_logging  # noqa: E402
from runbooks.engine.models import Actor, Origin  # noqa: E402
from runbooks.engine.settings import load_settings  # noqa: E402
from runbooks.engine.store.sqlite import SqliteStore  # noqa: E402
from sandbox import atlas  # noqa: E402
from sandbox.aws import AwsSandbox  # noqa: E402
from sandbox.health import HealthServer  # noqa: E402
from sandbox.pagerduty import PagerDutyEmulator  # noqa: E402
from sandbox.runner import (  # noqa: E402
    seed_backups,
    start_cloud_backups,
    start_databases,
    start_emulators,
    write_env,
)
from sandbox.slack import SlackEmulator  # noqa: E402

ALICE = Actor("alice", "Alice", Origin.CLI)


def export(env_file: Path) -> None:
    """``source`` the sandbox's env file into this process."""
    for line in env_file.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            os.environ[key] = shlex.split(value)[0] if value else ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    configure_logging(open(os.devnull, "w"))  # noqa: SIM115 - the whole run
    tmp = Path(tempfile.mkdtemp(prefix="readiness-bench-"))
    os.environ["RUNBOOK_BOT_HOME"] = str(tmp / "home")
    emulators = start_emulators()
    slack = SlackEmulator().start()
    aws = AwsSandbox().start().seed()
    cluster = atlas.ClusterState()
    wire = atlas.WireDatabase(cluster)
    wire.start()
    rehearsal = atlas.ClusterState(name="rehearsal")
    rehearsal_wire = atlas.WireDatabase(rehearsal)
    rehearsal_wire.start()
    databases = start_databases(wire, rehearsal_wire)
    cloud = start_cloud_backups(wire, rehearsal_wire, databases)
    api = atlas.AtlasEmulator(cluster, backups=cloud, others=[rehearsal]).start()
    health = HealthServer().start()
    pagerduty = PagerDutyEmulator(tmp / "pagerduty").start()
    env_file = write_env(
        tmp / "sandbox", emulators, slack, aws=aws, database=(api, wire),
        databases=databases, health=health, pagerduty=pagerduty,
    )  # fmt: skip
    seed_backups(load_settings(), aws, databases)
    export(env_file)
    config = load_config(ROOT / "config")
    store = SqliteStore(tmp / "state.db")
    clock = SystemClock()
    engine = Engine(
        config=config,
        store=store,
        registry=load_catalog(),
        audit=AuditLog(store, b"bench-audit-key-0123456789abcdef", clock),
        clock=clock,
        adapters_factory=lambda: LiveInfrastructure(config),
        state_dir=tmp / "home",
    )
    wires = [wire, rehearsal_wire, *databases.values()]

    def counts() -> dict[str, int]:
        return {
            "kubernetes": sum(len(e.cluster.requests) for e in emulators.values()),
            "aws": len(aws.calls),
            # Not the driver's own topology monitoring (hello, ismaster): its calls, not ours.
            "wire commands": sum(
                n
                for w in {id(w): w for w in wires}.values()
                for name, n in w.commands.items()
                if name not in ("hello", "ismaster")
            ),
            "slack": len(slack.calls()),
            "pagerduty": len(pagerduty.calls()),
        }

    def writes() -> int:
        kube = sum(len(e.cluster.writes()) for e in emulators.values())
        wire_writes = sum(sum(w.writes().values()) for w in {id(w): w for w in wires}.values())
        return kube + len(aws.writes()) + len(cluster.writes) + len(rehearsal.writes) + wire_writes

    # The write logs before the evaluations (the seed wrote the backups): only growth counts.
    written = writes()
    aws_calls = len(aws.calls)
    times: list[float] = []
    calls: dict[str, int] = {}
    report = None
    for _ in range(args.runs):
        before = counts()
        start = time.perf_counter()
        report = engine.readiness(actor=ALICE)
        times.append(time.perf_counter() - start)
        calls = {k: v - before[k] for k, v in counts().items()}
    assert report is not None
    grew = writes() - written
    commands: dict[str, int] = {}
    for server in {id(w): w for w in wires}.values():
        for name, n in server.commands.items():
            commands[name] = commands.get(name, 0) + n
    top = sorted(commands.items(), key=lambda kv: -kv[1])[:5]
    print(f"wire commands since the sandbox started, most frequent: {top}")
    print(f"environments: {', '.join(config.environment_names())}")
    print(f"checks: {len(report.findings)}, problems: {len(report.problems)}")
    for finding in report.problems:
        print(f"  NOT READY {finding.key}: {finding.detail[:140]}")
    print(f"wall time per evaluation: first {times[0]:.2f} s, median of the rest "
          f"{statistics.median(times[1:] or times):.2f} s ({len(times)} runs)")  # fmt: skip
    print(f"provider calls per evaluation (the last): {sum(calls.values())} {calls}")
    print(
        f"write calls during {len(times)} evaluations: {grew} "
        f"(of {len(aws.calls) - aws_calls} AWS calls)"
    )
    engine.close()
    store.close()
    for emulator in emulators.values():
        emulator.stop()
    for stoppable in (slack, aws, api, health, pagerduty):
        stoppable.stop()


if __name__ == "__main__":
    main()
