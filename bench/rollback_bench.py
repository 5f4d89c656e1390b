"""Rollback through the engine vs. the same API calls made directly, against the emulator.

Each run gets a fresh emulator whose controller takes about 2 s to roll out. The baseline
script reads the deployment and its replica sets, sends kubectl's JSON patch, watches the
deployment until the rollout completes and reads the service's endpoints: what the runbook
does, without plan, store, audit log or events. Runs alternate; medians are reported.

Bookkeeping per step is measured separately: an execution of N no-op steps, so everything
measured is the engine's own work (two saves, two audit records, two events per step).

    python bench/rollback_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, watch
from kubernetes import config as kube_config

from runbooks.adapters import LiveInfrastructure
from runbooks.catalog import load_catalog
from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import SystemClock
from runbooks.engine.config.loader import load_config
from runbooks.engine.engine import Engine
from runbooks.engine.logs import configure_logging
from runbooks.engine.models import Actor, Origin, State
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import PlanContext, RunContext, Step
from runbooks.engine.registry import Registry, runbook
from runbooks.engine.store.sqlite import SqliteStore
from sandbox.kube.emulator import Cluster, KubeEmulator, kubeconfig
from sandbox.kube.seed import seed

ROOT = Path(__file__).resolve().parents[1]
ALICE = Actor("alice", "Alice", Origin.CLI)
NS, NAME = "development", "api-deployment"


def fresh_cluster(tmp: Path) -> tuple[KubeEmulator, Path]:
    emulator = KubeEmulator(
        seed(Cluster("us-east-1", pace=0.2, ready_after=0.4), "us-east-1")
    ).start()
    path = tmp / f"kubeconfig-{emulator.url.rsplit(':', 1)[1]}"
    path.write_text(yaml.safe_dump(kubeconfig({"us-east-1": emulator.url})))
    return emulator, path


def baseline(path: Path) -> float:
    start = time.perf_counter()
    api_client = kube_config.new_client_from_config(config_file=str(path), context="us-east-1")
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    deploy = apps.read_namespaced_deployment(NAME, NS)
    replicasets = apps.list_namespaced_replica_set(NS, label_selector="app=api").items
    revision = {
        int(rs.metadata.annotations["deployment.kubernetes.io/revision"]): rs for rs in replicasets
    }
    target = revision[sorted(revision)[-2]]
    template = api_client.sanitize_for_serialization(target.spec.template)
    template["metadata"]["labels"].pop("pod-template-hash", None)
    annotations = dict(deploy.metadata.annotations or {})
    apps.patch_namespaced_deployment(
        NAME,
        NS,
        [
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ],
    )
    stream = watch.Watch()
    for event in stream.stream(
        apps.list_namespaced_deployment,
        NS,
        field_selector=f"metadata.name={NAME}",
        timeout_seconds=60,
    ):
        obj = event["object"]
        status = obj.status
        if (
            obj.metadata.generation <= (status.observed_generation or 0)
            and (status.updated_replicas or 0) == obj.spec.replicas
            and (status.replicas or 0) == obj.spec.replicas
            and (status.available_replicas or 0) >= obj.spec.replicas
        ):
            stream.stop()
    while len(core.read_namespaced_endpoints("api-service", NS).subsets[0].addresses or []) < 3:
        time.sleep(0.2)
    return time.perf_counter() - start


def through_engine(path: Path, tmp: Path, index: int) -> float:
    config = load_config(ROOT / "config")
    store = SqliteStore(tmp / f"engine-{index}.db")
    clock = SystemClock()
    engine = Engine(
        config=config,
        store=store,
        registry=load_catalog(),
        audit=AuditLog(store, b"bench-key-0123456789", clock),
        clock=clock,
        adapters_factory=lambda: LiveInfrastructure(config, kubeconfig=str(path)),
        state_dir=tmp,
    )
    start = time.perf_counter()
    prepared = engine.prepare("rollback", {"environment": NS}, actor=ALICE)
    execution = engine.start(engine.submit(prepared, actor=ALICE).id, actor=ALICE)
    elapsed = time.perf_counter() - start
    assert execution.state == State.SUCCEEDED, execution.error
    store.close()
    return elapsed


@dataclass(frozen=True, kw_only=True)
class NoOp(Step, kind="bench.noop"):
    index: int

    def describe(self) -> str:
        return f"no-op {self.index}"

    def run(self, ctx: RunContext) -> str | None:
        return None


@runbook("bench.noop", params=RunbookParams)
def noop_runbook(ctx: PlanContext, params: RunbookParams) -> list[Step]:
    """N no-op steps."""
    return [NoOp(index=i) for i in range(50)]


def bookkeeping_per_step(tmp: Path) -> float:
    config = load_config(ROOT / "config")
    store = SqliteStore(tmp / "noop.db")
    clock = SystemClock()
    engine = Engine(
        config=config,
        store=store,
        registry=Registry([noop_runbook]),
        audit=AuditLog(store, b"bench-key-0123456789", clock),
        clock=clock,
        state_dir=tmp,
    )
    execution = engine.submit(
        engine.prepare("bench.noop", {"environment": NS}, actor=ALICE), actor=ALICE
    )
    start = time.perf_counter()
    engine.start(execution.id, actor=ALICE)
    return (time.perf_counter() - start) / 50


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        configure_logging(str(tmp / "bench.jsonl"))
        direct, engine = [], []
        for index in range(args.runs):
            emulator, path = fresh_cluster(tmp)
            direct.append(baseline(path))
            emulator.stop()
            emulator, path = fresh_cluster(tmp)
            engine.append(through_engine(path, tmp, index))
            emulator.stop()
        per_step = statistics.median(bookkeeping_per_step(tmp) for _ in range(3))
    d, e = statistics.median(direct), statistics.median(engine)
    print(f"runs: {args.runs} each, alternating, fresh emulator per run (medians)")
    print(f"direct API calls : {d:.3f} s")
    print(f"rollback runbook : {e:.3f} s   ratio {e / d:.2f}x  (goal <= 1.2x)")
    print(f"engine bookkeeping per step: {per_step * 1000:.1f} ms  (goal <= 15 ms)")


if __name__ == "__main__":
    main()
