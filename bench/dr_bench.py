"""``dr.failover`` through the engine vs. a script making the same provider calls.

Both run against the sandbox's servers in this process: moto (AWS), the Atlas emulator with
its wire-protocol server, the Kubernetes emulators and the per-region /health. Before each
run everything is reset to the seed (moto reset + reseed, a fresh cluster state). The
baseline uses the same adapter classes the runbook uses (so the provider calls, waits and
polls are identical) and makes the calls the failover plan makes, once, in the same order:
read the DNS weights, the target's /health and error rate (the preflight), the DNS TTL and
the health checks' timing (the predicted RTO), both node groups, both deployments, the
database topology; set the target's capacity and wait for it; promote the database; set the
weights; target health, /health three times and the error rate. The engine adds planning
through the registry, parameter validation, approvals (two, from two approvers), the store,
the audit chain and events, and plans twice more: when the approval that completes the gate
is recorded (so the approver hears at once that the plan no longer holds) and at start.
Runs alternate; medians are reported, and the difference per step.

    python bench/dr_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runbooks.adapters import LiveInfrastructure  # noqa: E402
from runbooks.adapters.aws import AwsAdapter  # noqa: E402
from runbooks.adapters.mongo import MongoAdapter  # noqa: E402
from runbooks.catalog import load_catalog  # noqa: E402
from runbooks.dr import error_rate_query  # noqa: E402
from runbooks.engine.audit import AuditLog  # noqa: E402
from runbooks.engine.clock import SystemClock  # noqa: E402
from runbooks.engine.config.loader import load_config  # noqa: E402
from runbooks.engine.engine import Engine  # noqa: E402
from runbooks.engine.logs import configure_logging  # noqa: E402
from runbooks.engine.models import Actor, Origin, State  # noqa: E402
from runbooks.engine.store.sqlite import SqliteStore  # noqa: E402
from sandbox import atlas  # noqa: E402
from sandbox.aws import CREDENTIALS, AwsSandbox  # noqa: E402
from sandbox.health import HealthServer  # noqa: E402
from sandbox.kube.emulator import Cluster, KubeEmulator, kubeconfig  # noqa: E402
from sandbox.kube.seed import seed  # noqa: E402

ALICE = Actor("alice", "Alice", Origin.CLI)


class Timed:
    """Wraps an adapter: every method call's wall time is added to ``spent``."""

    def __init__(self, inner: Any, spent: list[float]) -> None:
        self._inner, self._spent = inner, spent

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._spent[0] += time.perf_counter() - started

        return call


class TimedInfrastructure(LiveInfrastructure):
    """The live adapters, with the time spent in provider calls measured."""

    def __init__(self, config: Any, kubeconfig: str) -> None:
        super().__init__(config, kubeconfig=kubeconfig)
        self.spent = [0.0]

    def _timed(self, make: Any, *args: Any) -> Any:
        # Building an SDK client (kubeconfig, boto3 session) is the provider's cost too.
        started = time.perf_counter()
        try:
            return Timed(make(*args), self.spent)
        finally:
            self.spent[0] += time.perf_counter() - started

    def kube(self, environment: str, region: str) -> Any:
        return self._timed(super().kube, environment, region)

    def aws(self, region: str) -> Any:
        return self._timed(super().aws, region)

    def database(self, environment: str) -> Any:
        return self._timed(super().database, environment)

    def metrics(self, environment: str) -> Any:
        return self._timed(super().metrics, environment)

    def health(self) -> Any:
        return self._timed(super().health)


class SleepCountingClock(SystemClock):
    def __init__(self) -> None:
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        super().sleep(seconds)


APPROVERS = [Actor("bob", "Bob", Origin.SLACK), Actor("dave", "Dave", Origin.SLACK)]
ZONE, RECORD = "example.com.", "api-production.example.com."


class World:
    def __init__(self, tmp: Path) -> None:
        self.aws = AwsSandbox().start()
        self.health = HealthServer().start()
        self.kube = {
            region: KubeEmulator(seed(Cluster(region, pace=0.02), region)).start()
            for region in ("us-east-1", "us-west-2")
        }
        self.kubeconfig = tmp / "kubeconfig"
        self.kubeconfig.write_text(
            yaml.safe_dump(kubeconfig({r: e.url for r, e in self.kube.items()}))
        )
        self.state = atlas.ClusterState(election_delay=0.5)
        self.atlas = atlas.AtlasEmulator(self.state).start()
        self.wire = atlas.WireDatabase(self.state).start()
        os.environ.update(
            {
                **CREDENTIALS,
                "AWS_ENDPOINT_URL": self.aws.url,
                "PRODUCTION_MONGODB_URI": self.wire.uri,
                "ATLAS_API_URL": self.atlas.url,
                "ATLAS_PUBLIC_KEY": atlas.PUBLIC_KEY,
                "ATLAS_PRIVATE_KEY": atlas.PRIVATE_KEY,
                "RUNBOOK_BOT_SANDBOX_HEALTH": self.health.url,
                "RUNBOOK_BOT_SANDBOX_PROMETHEUS": self.health.url,
            }
        )

    def reset(self) -> None:
        self.aws.reset()
        self.aws.seed()
        fresh = atlas.ClusterState(election_delay=0.5)
        with self.state.lock:
            self.state.regions, self.state.primary = fresh.regions, fresh.primary
            self.state.lag, self.state.state_name = fresh.lag, fresh.state_name

    def stop(self) -> None:
        self.aws.stop()
        self.health.stop()
        self.atlas.stop()
        self.wire.stop()
        for emulator in self.kube.values():
            emulator.stop()


def baseline(world: World) -> float:
    from kubernetes import client
    from kubernetes import config as kube_config

    full = load_config(ROOT / "config")
    config = full.environment("production")
    # The same adapter classes the runbook gets for Prometheus and /health (built from the
    # same configuration); what they answer is not judged here, only what it costs.
    live = LiveInfrastructure(full, kubeconfig=str(world.kubeconfig))
    metrics, health = live.metrics("production"), live.health()
    query = error_rate_query(config, "production", "us-west-2")
    assert query is not None
    start = time.perf_counter()
    east, west = AwsAdapter("us-east-1"), AwsAdapter("us-west-2")
    weights = east.traffic_weights(ZONE, RECORD)
    # The plan's preflight (the target's /health and error rate) and predicted RTO (TTL and
    # health-check timing) read these once.
    health.status(f"{world.health.url}/us-west-2/health")
    metrics.query(query)
    east.traffic_ttl(ZONE, RECORD)
    east.health_check_timing(ZONE)
    source = east.node_group("prod-api-use1")
    target = west.node_group("prod-api-usw2")
    for region in ("us-east-1", "us-west-2"):
        api = kube_config.new_client_from_config(config_file=str(world.kubeconfig), context=region)
        client.AppsV1Api(api).read_namespaced_deployment("api-deployment", "production")
        api.close()
    assert config.mongodb is not None
    with MongoAdapter("production", config.mongodb) as database:
        database.topology()
        west.set_desired("prod-api-usw2", source.desired, at=time.time())
        while west.node_group("prod-api-usw2").in_service != source.desired:
            time.sleep(2.0)
        database.promote("us-west-2", timeout=60, check=lambda: None)
    assert target.desired < source.desired and weights["us-east-1"] == 100
    east.set_traffic_weights(ZONE, RECORD, {"us-east-1": 0, "us-west-2": 100})
    west.target_health("prod-api-usw2")
    for attempt in range(3):
        if attempt:
            time.sleep(1.0)
        with urllib.request.urlopen(f"{world.health.url}/us-west-2/health", timeout=5):  # noqa: S310
            pass
    metrics.query(query)  # the verification's error rate
    took = time.perf_counter() - start
    live.close()
    return took


def through_engine(world: World, tmp: Path, index: int) -> tuple[float, float, int]:
    """(total seconds, seconds outside provider calls and waits, steps)."""
    config = load_config(ROOT / "config")
    store = SqliteStore(tmp / f"engine-{index}.db")
    clock = SleepCountingClock()
    infrastructure = TimedInfrastructure(config, str(world.kubeconfig))
    engine = Engine(
        config=config,
        store=store,
        registry=load_catalog(),
        audit=AuditLog(store, b"bench-key-0123456789", clock),
        clock=clock,
        adapters_factory=lambda: infrastructure,
        state_dir=tmp,
    )
    start = time.perf_counter()
    prepared = engine.prepare("dr.failover", {"region": "us-west-2"}, actor=ALICE)
    execution = engine.submit(prepared, actor=ALICE)
    for approver in APPROVERS:
        execution = engine.approve(execution.id, actor=approver, plan_hash=execution.plan.hash)
    execution = engine.start(execution.id, actor=ALICE)
    elapsed = time.perf_counter() - start
    assert execution.state == State.SUCCEEDED, execution.error
    steps = len(execution.steps)
    engine.close()
    store.close()
    own = elapsed - infrastructure.spent[0] - clock.slept
    return elapsed, own, steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dr-bench-"))
    configure_logging(str(tmp / "log.jsonl"))
    world = World(tmp)
    direct: list[float] = []
    engine: list[float] = []
    own: list[float] = []
    steps = 0
    try:
        for i in range(args.runs):
            order = ["direct", "engine"] if i % 2 == 0 else ["engine", "direct"]
            for which in order:
                world.reset()
                if which == "direct":
                    direct.append(baseline(world))
                else:
                    took, mine, steps = through_engine(world, tmp, i)
                    engine.append(took)
                    own.append(mine)
    finally:
        world.stop()
    d, e, o = statistics.median(direct), statistics.median(engine), statistics.median(own)
    print(f"{args.runs} runs each, alternating, medians")
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| the same provider calls, scripted | {d:.3f} s |")
    print(f"| `dr.failover production us-west-2` through the engine ({steps} steps) | {e:.3f} s |")
    print(f"| ratio | {e / d:.2f}x |")
    print(f"| engine's own time (total - provider calls - waits), whole run | {o * 1000:.1f} ms |")
    print(f"| engine's own time per step | {o / steps * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
