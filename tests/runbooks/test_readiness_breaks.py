"""The issue's journey, one broken thing at a time, on the bot's readiness watch and a fake
clock: each thing is broken from outside the bot by an independent client (the AWS CLI
raises the DNS TTL or empties the backup bucket, kubectl pauses a deployment or raises one
region's autoscaler ceiling, the Atlas emulator's hooks raise lag or turn the standby
region's nodes read-only, the Prometheus emulator's hook leaves a gate signal without data,
the Slack emulator revokes the token, the Kubernetes emulator denies a verb in an access
review). After one evaluation exactly one finding opens naming it, one line is queued for
the ops channel and one PagerDuty alert goes out; repairing it resolves the finding (and the
alert) on the next evaluation. No evaluation writes: the write logs of the Kubernetes
emulators, moto, the Atlas API and its wire server stay empty."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.auth import HTTPDigestAuth

from runbooks.adapters.pagerduty import PagerDuty, PagerDutySettings
from runbooks.engine.background.outbox import OutboxFollower
from runbooks.engine.background.readiness_watch import ReadinessNotices, ReadinessWatch, WatchTick
from runbooks.engine.clock import FakeClock
from runbooks.engine.config.loader import Config
from runbooks.engine.config.schedules import ReadinessSchedule
from runbooks.engine.engine import Engine
from sandbox import atlas
from tests.conftest import KubeSandbox
from tests.runbooks.conftest import Chat, live_engine

REGIONS = ("us-east-1", "us-west-2")
DEPLOY = ("deployment/api-deployment", "-n", "production")
HPA = ("patch", "hpa", "api-deployment", "-n", "production")
P95 = {"signal": "latency_p95", "region": "us-west-2"}
DUMP = "s3://app-backups/runbook-bot/2026-12-04T00-00-00Z/app/users.bson.gz"
SCALE = {"namespace": "production", "group": "apps", "resource": "deployments/scale"}


@dataclass
class World:
    kube: KubeSandbox
    aws: Any
    cluster: Any
    chat: Chat
    directory: Path
    health_url: str = ""

    def hook(self, path: str, body: dict[str, Any]) -> None:
        """The sandbox /health and Prometheus emulator's hooks, over HTTP."""
        request = urllib.request.Request(  # noqa: S310 - the local emulator
            self.health_url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - local

    def set_ttl(self, ttl: int) -> None:
        """The AWS CLI sets the TTL of production's weighted traffic records."""
        zone = self.aws.cli("route53", "list-hosted-zones-by-name", "--dns-name", "example.com.")
        zone_id = zone["HostedZones"][0]["Id"].rsplit("/", 1)[-1]
        name = "api-production.example.com."
        records = self.aws.cli(
            "route53", "list-resource-record-sets", "--hosted-zone-id", zone_id,
            "--start-record-name", name,
        )["ResourceRecordSets"]  # fmt: skip
        changes = [
            {"Action": "UPSERT", "ResourceRecordSet": {**r, "TTL": ttl}}
            for r in records
            if r["Name"] == name
        ]
        self.aws.cli(
            "route53", "change-resource-record-sets", "--hosted-zone-id", zone_id,
            "--change-batch", json.dumps({"Changes": changes}),
        )  # fmt: skip

    def upload_backup(self) -> None:
        """The AWS CLI puts a dump (mongodump's layout) in production's bucket."""
        dump = self.directory / "users.bson.gz"
        dump.write_bytes(b"\x1f\x8b sandbox dump")
        self.aws.cli("s3", "cp", "--only-show-errors", str(dump), DUMP)

    def lag(self, seconds: float) -> None:
        """The Atlas emulator's hook: the us-west-2 member's replication lag."""
        self.atlas_hook("/_sandbox/lag", {"region": "us-west-2", "seconds": seconds})

    def standby_nodes(self, electable: int, read_only: int) -> None:
        """The Atlas emulator's hook: us-west-2's electable and read-only node counts (as a
        change in Atlas's UI would make them); the Admin API, read by plain ``requests``
        with digest auth, shows the change."""
        self.atlas_hook(
            "/_sandbox/nodes",
            {"region": "us-west-2", "electable": electable, "read_only": read_only},
        )
        seen = requests.get(
            f"{os.environ['ATLAS_API_URL']}/api/atlas/v2/groups/{atlas.PROJECT}/clusters/production",
            auth=HTTPDigestAuth(atlas.PUBLIC_KEY, atlas.PRIVATE_KEY),
            timeout=5,
        ).json()
        (west,) = [
            c
            for c in seen["replicationSpecs"][0]["regionConfigs"]
            if c["regionName"] == "US_WEST_2"
        ]
        assert west["electableSpecs"]["nodeCount"] == electable

    def atlas_hook(self, path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(  # noqa: S310 - the local emulator
            os.environ["ATLAS_API_URL"] + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - local

    def kubectl(self, *args: str) -> None:
        done = self.kube.kubectl(*args, region="us-west-2")
        assert done.returncode == 0, done.stderr


Change = Callable[[World], None]
#: name: (break it, repair it, the finding's key (or keys: one thing several environments
#: use), words of its detail)
CASES: dict[str, tuple[Change, Change, str | tuple[str, ...], str]] = {
    "dns-ttl-raised-to-an-hour": (
        lambda w: w.set_ttl(3600),
        lambda w: w.set_ttl(60),
        "production:dr.failover:the predicted RTO is within the target:failover RTO",
        "DNS TTL 1h00m",
    ),
    "deployment-paused": (
        lambda w: w.kubectl("rollout", "pause", *DEPLOY),
        lambda w: w.kubectl("rollout", "resume", *DEPLOY),
        "production:rollback:an earlier release to return to:api us-west-2",
        "is paused: a rollback would be refused",
    ),
    "replication-lag-raised": (
        lambda w: w.lag(600),
        lambda w: w.lag(2),
        "production:dr.failover:the standby region can take the traffic:database replication",
        "above the RPO target 5m",
    ),
    "standby-region-not-electable": (
        # us-west-2's nodes turned read-only: they still replicate (the lag check passes), but
        # no member there can become primary, so a failover could not move the primary.
        lambda w: w.standby_nodes(electable=0, read_only=2),
        lambda w: w.standby_nodes(electable=2, read_only=0),
        "production:dr.failover:the Atlas cluster's regions:Atlas cluster production",
        "us-west-2 (US_WEST_2) has no electable node: a failover could not move the primary",
    ),
    "autoscaler-bounds-differ": (
        lambda w: w.kubectl(*HPA, "--type", "merge", "-p", '{"spec": {"maxReplicas": 12}}'),
        lambda w: w.kubectl(*HPA, "--type", "merge", "-p", '{"spec": {"maxReplicas": 10}}'),
        "production:scale.hpa:autoscaler bounds within policy, equal across regions:"
        "api autoscaler api-deployment",
        "us-east-1 2-10; us-west-2 2-12: regions differ",
    ),
    "gate-signal-without-data": (
        # The Prometheus emulator's hook: us-west-2's p95 latency has no series any more.
        lambda w: w.hook("/_sandbox/signal", P95 | {"value": None}),
        lambda w: w.hook("/_sandbox/signal", P95 | {"value": 0.18}),
        "production:rollback:the gate's signals have data:api us-west-2 p95 response time",
        "no data (query ",
    ),
    "standby-health-failing": (
        lambda w: w.hook("/_sandbox/health", {"region": "us-west-2", "healthy": False}),
        lambda w: w.hook("/_sandbox/health", {"region": "us-west-2", "healthy": True}),
        # The sandbox's production and rehearsal share the per-region /health: one finding
        # for each environment whose failover it would fail.
        (
            "production:dr.failover:the standby region can take the traffic:us-west-2 /health",
            "rehearsal:dr.failover:the standby region can take the traffic:us-west-2 /health",
        ),
        "/us-west-2/health answered 503",
    ),
    "standby-error-rate-high": (
        lambda w: w.hook("/_sandbox/error_rate", {"region": "us-west-2", "rate": 0.08}),
        lambda w: w.hook("/_sandbox/error_rate", {"region": "us-west-2", "rate": 0.001}),
        "production:dr.failover:the standby region can take the traffic:us-west-2 error rate",
        "8 %, above the rollback trigger of 5 %",
    ),
    "backups-gone": (
        lambda w: w.aws.cli(
            "s3", "rm", "--only-show-errors", "--recursive", "s3://app-backups/runbook-bot"
        ),
        lambda w: w.upload_backup(),
        "production:restore.test:a recent backup:backups in app-backups",
        "no backup in s3://app-backups",
    ),
    "slack-token-revoked": (
        lambda w: w.chat.hook(w.chat.slack.url + "/_sandbox/revoke", {"revoked": True}),
        lambda w: w.chat.hook(w.chat.slack.url + "/_sandbox/revoke", {"revoked": False}),
        "*:environment:Slack token:Slack",
        "Slack auth.test: token_revoked",
    ),
    "kubernetes-verb-denied": (
        lambda w: w.kube.hook("/_sandbox/deny", {**SCALE, "verb": "patch"}, region="us-west-2"),
        lambda w: w.kube.hook(
            "/_sandbox/deny", {**SCALE, "verb": "patch", "allow": True}, region="us-west-2"
        ),
        "production:environment:Kubernetes access:Kubernetes us-west-2 production",
        "the bot may not patch deployments/scale.apps",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_broken_thing_one_finding_one_message_one_page_then_resolved(
    case: str,
    *,
    kube: KubeSandbox,
    aws: Any,
    cluster: Any,
    health: Any,
    chat: Chat,
    sandbox_config: Config,
    tmp_path: Path,
) -> None:
    breaks, repair, named, words = CASES[case]
    keys = sorted([named] if isinstance(named, str) else named)
    world = World(kube, aws, cluster, chat, tmp_path, health_url=health.url)
    before = len(aws.server.calls)
    world.upload_backup()
    # A positive control: the write log sees the AWS CLI's upload.
    assert [c[0] for c in aws.server.writes(before)] == ["PUT"]
    clock = FakeClock(time.time())  # the bucket's objects carry the real time
    schedule = ReadinessSchedule(interval=1800, first_after=300, reannounce=86400)
    pagerduty = PagerDuty(PagerDutySettings.from_env())
    with live_engine(
        sandbox_config, tmp_path / "bot", clock=clock, kubeconfig=str(kube.kubeconfig)
    ) as engine:
        watch = ReadinessWatch(engine, schedule, owner="bot-1")

        def alert(summary: str, dedup: str, details: dict[str, Any]) -> None:
            pagerduty.trigger(summary, dedup, severity="warning", details=details)

        consumer = ReadinessNotices(engine, alert=alert, resolve=pagerduty.resolve)
        follower = OutboxFollower(engine.store, clock, consumer, name="readiness", owner="bot-1")
        evaluate = evaluator(world, engine, watch, follower)

        assert not evaluate().evaluated  # a new installation: the first one in 5 minutes
        clock.advance(300)
        assert evaluate().evaluated
        assert not set(keys) & set(watch.open_findings())
        pages, notices = len(chat.pagerduty.state.events), len(queued(engine))

        breaks(world)
        clock.advance(1800)
        broken = evaluate()
        assert sorted(broken.opened) == keys and broken.resolved == []
        for key in keys:
            assert words in watch.open_findings()[key]["detail"]
        new_pages = chat.pagerduty.state.events[pages:]
        dedups = [f"runbook-bot:readiness:{key}" for key in keys]
        assert sorted((e["event_action"], e["dedup_key"]) for e in new_pages) == [
            ("trigger", dedup) for dedup in dedups
        ]
        lines = queued(engine)[notices:]
        assert len(lines) == len(keys)
        assert all(line["channel"] == "C0APPROVALS" and words in line["text"] for line in lines)

        repair(world)
        clock.advance(1800)
        fixed = evaluate()
        assert sorted(fixed.resolved) == keys and fixed.opened == []
        resolved = chat.pagerduty.state.events[-len(keys) :]
        assert sorted((e["event_action"], e["dedup_key"]) for e in resolved) == [
            ("resolve", dedup) for dedup in dedups
        ]
        assert queued(engine)[-1]["text"].startswith(":white_check_mark: ready again: ")
    pagerduty.close()


def evaluator(
    world: World, engine: Engine, watch: ReadinessWatch, follower: OutboxFollower
) -> Callable[[], WatchTick]:
    """One tick of the leader and of the notices' follower, asserting nothing was written."""

    def evaluate() -> WatchTick:
        kube = {r: len(world.kube.cluster(r).requests) for r in REGIONS}
        aws = len(world.aws.server.calls)
        atlas = len(world.cluster.writes)
        tick = watch.tick()
        for region in REGIONS:
            assert world.kube.cluster(region).writes(kube[region]) == []
        assert world.aws.server.writes(aws) == []
        assert world.cluster.writes[atlas:] == []
        assert follower.lead()
        follower.pass_once()
        return tick

    return evaluate


def queued(engine: Engine) -> list[dict[str, Any]]:
    """The lines queued for Slack (``notice`` events the Slack notifier posts)."""
    return [e.payload for e in engine.store.events_after(0, limit=10_000) if e.type == "notice"]
