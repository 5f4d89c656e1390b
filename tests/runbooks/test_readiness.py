"""Readiness against the sandbox: break one thing at a time through an independent client
(kubectl pauses a deployment, the AWS CLI shrinks then deletes the standby's node group,
kubectl sets another image in one region): exactly one finding names it, and fixing it clears
it. Every evaluation reads only: the Kubernetes emulators' request logs show no write."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics
from runbooks.adapters.pagerduty import PagerDuty, PagerDutySettings
from runbooks.engine.background.outbox import OutboxFollower
from runbooks.engine.background.readiness_watch import ReadinessNotices, ReadinessWatch, WatchTick
from runbooks.engine.clock import FakeClock
from runbooks.engine.config.environments import EnvironmentsFile
from runbooks.engine.config.loader import Config
from runbooks.engine.config.policy_file import PolicyFile
from runbooks.engine.config.schedules import ReadinessSchedule
from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput, Refused
from runbooks.engine.models import Actor, Origin
from sandbox.pagerduty import SANDBOX_ROUTING_KEY, PagerDutyEmulator
from tests.conftest import KubeSandbox, run_cli
from tests.runbooks.conftest import Chat, live_engine
from tests.support.people import ALICE

REGIONS = ("us-east-1", "us-west-2")


def problems(kube: KubeSandbox, engine: Engine, runbook: str) -> list[tuple[str, str]]:
    """The findings of one runbook's checks in production, asserting the evaluation wrote
    nothing to either cluster."""
    seen = {region: len(kube.cluster(region).requests) for region in REGIONS}
    report = engine.readiness(actor=ALICE, environment="production", runbook=runbook)
    for region in REGIONS:
        calls = kube.cluster(region).requests[seen[region] :]
        assert calls, "the checks read the cluster"
        assert {method for method, _path in calls} == {"GET"}, calls
    assert report.findings, "every check says something"
    return [(f.subject, f.detail) for f in report.problems]


def test_one_broken_thing_one_finding_and_fixing_it_clears_it(
    kube: KubeSandbox, kube_engine: Engine, aws: Any, cluster: Any
) -> None:
    assert problems(kube, kube_engine, "rollback") == []
    assert problems(kube, kube_engine, "dr.failover") == []

    deploy = ("deployment/api-deployment", "-n", "production")
    assert kube.kubectl("rollout", "pause", *deploy, region="us-west-2").returncode == 0
    ((subject, detail),) = problems(kube, kube_engine, "rollback")
    assert subject == "api us-west-2" and "is paused: a rollback would be refused" in detail
    assert kube.kubectl("rollout", "resume", *deploy, region="us-west-2").returncode == 0
    assert problems(kube, kube_engine, "rollback") == []

    shrink = ["--auto-scaling-group-name", "prod-api-usw2", "--min-size", "0"]
    aws.cli("autoscaling", "update-auto-scaling-group", *shrink, "--max-size", "2",
            "--desired-capacity", "2", region="us-west-2")  # fmt: skip
    ((subject, detail),) = problems(kube, kube_engine, "dr.failover")
    assert subject == "node group prod-api-usw2 capacity"
    assert "can grow to 2 nodes, but a failover needs 4" in detail
    aws.cli("autoscaling", "update-auto-scaling-group", *shrink, "--max-size", "10",
            region="us-west-2")  # fmt: skip
    assert problems(kube, kube_engine, "dr.failover") == []

    image = "api=123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:1.4.3"
    assert kube.kubectl("set", "image", *deploy, image, region="us-west-2").returncode == 0
    ((subject, detail),) = problems(kube, kube_engine, "dr.failover")
    assert subject == "api images"
    assert "us-east-1 app-api:1.4.2" in detail and "us-west-2 app-api:1.4.3" in detail

    aws.cli("autoscaling", "delete-auto-scaling-group", "--auto-scaling-group-name",
            "prod-api-usw2", "--force-delete", region="us-west-2")  # fmt: skip
    found = dict(problems(kube, kube_engine, "dr.failover"))
    assert found["node group prod-api-usw2"].startswith("could not be checked: ")  # never a pass
    # Without the standby's group the failover's RTO cannot be predicted either: said, not passed.
    assert set(found) == {"node group prod-api-usw2", "api images", "failover RTO"}
    assert "prod-api-usw2" in found["failover RTO"]

    audited = [r for r in kube_engine.audit.export() if r["action"] == "readiness.checked"]
    assert audited[-1]["outcome"] == "findings"
    assert any("node group prod-api-usw2" in p for p in audited[-1]["detail"]["problems"])


def test_an_unknown_runbook_or_environment_is_refused(kube_engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="unknown runbook 'rolback'"):
        kube_engine.readiness(actor=ALICE, runbook="rolback")
    with pytest.raises(InvalidInput, match="unknown environment 'prod'"):
        kube_engine.readiness(actor=ALICE, environment="prod")


@pytest.mark.slow  # the CLI as a process
def test_the_watch_opens_one_finding_pages_once_and_resolves_it_on_a_fake_clock(
    *,
    kube: KubeSandbox,
    sandbox_config: Config,
    tmp_path: Path,
    health: Any,
    aws: Any,
    cluster: Any,
    pagerduty_emulator: PagerDutyEmulator,
    cli_env: dict[str, str],
) -> None:
    """Every 30 minutes on the leader (one of two replicas), on a fake clock: breaking the
    standby's node group opens exactly one finding, posts one line to the ops channel and
    sends one low-urgency PagerDuty alert keyed by the finding; fixing it resolves all three
    on the next evaluation. Evaluations only read (the emulators' request logs)."""
    clock = FakeClock()
    schedule = ReadinessSchedule(interval=1800, first_after=300, reannounce=86400)
    pagerduty = PagerDuty(
        PagerDutySettings.from_env(
            {
                "PAGERDUTY_EVENTS_URL": pagerduty_emulator.url,
                "PAGERDUTY_CA_BUNDLE": str(pagerduty_emulator.ca_path),
                "PAGERDUTY_ROUTING_KEY": SANDBOX_ROUTING_KEY,
            }
        )
    )
    with live_engine(
        sandbox_config, tmp_path / "one", clock=clock, kubeconfig=str(kube.kubeconfig)
    ) as engine:
        one = ReadinessWatch(engine, schedule, owner="bot-1")
        two = ReadinessWatch(engine, schedule, owner="bot-2")

        def alert(summary: str, key: str, details: dict[str, Any]) -> None:
            pagerduty.trigger(summary, key, severity="warning", details=details)

        consumer = ReadinessNotices(engine, alert=alert, resolve=pagerduty.resolve)
        follower = OutboxFollower(engine.store, clock, consumer, name="readiness", owner="bot-1")

        def evaluate() -> WatchTick:
            """Both replicas tick; the one that leads evaluates, once per interval."""
            seen = {region: len(kube.cluster(region).requests) for region in REGIONS}
            ticks = [one.tick(), two.tick()]
            assert [t.leader for t in ticks] == [True, False]
            for region in REGIONS:
                assert kube.cluster(region).writes(seen[region]) == []  # reviews write nothing
            assert follower.lead()
            follower.pass_once()
            return ticks[0]

        assert not evaluate().evaluated  # a new installation: the first one in 5 minutes
        clock.advance(299)
        assert not evaluate().evaluated
        clock.advance(1)
        first = evaluate()
        assert first.evaluated
        baseline = set(one.open_findings())  # what the test sandbox lacks (no rehearsal db…)
        pages = len(pagerduty_emulator.state.events)

        def notices() -> list[Any]:
            events = engine.store.events_after(0, limit=10_000)
            return [e for e in events if e.type == "notice"]

        notices_before = notices()

        clock.advance(600)
        assert not evaluate().evaluated  # not due: once per interval
        aws.cli("autoscaling", "update-auto-scaling-group", "--auto-scaling-group-name",
                "prod-api-usw2", "--min-size", "0", "--max-size", "2", "--desired-capacity", "2",
                region="us-west-2")  # fmt: skip
        clock.advance(1200)
        broken = evaluate()
        key = (
            "production:dr.failover:the standby region can take the traffic:"
            "node group prod-api-usw2 capacity"
        )
        assert broken.opened == [key] and broken.resolved == [] and broken.reminded == []
        new_pages = pagerduty_emulator.state.events[pages:]
        assert [(e["event_action"], e["dedup_key"]) for e in new_pages] == [
            ("trigger", f"runbook-bot:readiness:{key}")
        ]
        assert new_pages[0]["payload"]["severity"] == "warning"
        (posted,) = notices()[len(notices_before) :]
        assert posted.payload["channel"] == "C0APPROVALS"
        # /metrics: the open finding by environment, runbook and check; when it was evaluated.
        scraped = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(Metrics(engine).render().decode())
            for sample in family.samples
        }
        labels = (
            ("check", "the standby region can take the traffic"),
            ("environment", "production"),
            ("runbook", "dr.failover"),
        )
        assert scraped["runbook_bot_readiness_findings", labels] >= 1
        assert scraped["runbook_bot_readiness_last_evaluation_timestamp_seconds", ()] == clock.now()
        # readiness.status (the CLI, its own process) lists it from the store.
        shown = run_cli(
            ["readiness.status", "--json"],
            {**cli_env, "RUNBOOK_BOT_STATE": str(tmp_path / "one" / "state.db")},
        )
        assert shown.returncode == 1, shown.stderr
        assert key in json.loads(shown.stdout)["open"]
        assert "not ready" in posted.payload["text"]
        assert "can grow to 2 nodes, but a failover needs 4" in posted.payload["text"]

        clock.advance(1800)
        assert evaluate().opened == []  # still open: not announced again within a day

        aws.cli("autoscaling", "update-auto-scaling-group", "--auto-scaling-group-name",
                "prod-api-usw2", "--max-size", "10", region="us-west-2")  # fmt: skip
        clock.advance(1800)
        fixed = evaluate()
        assert fixed.resolved == [key] and fixed.opened == []
        assert [
            (e["event_action"], e["dedup_key"]) for e in pagerduty_emulator.state.events[-1:]
        ] == [("resolve", f"runbook-bot:readiness:{key}")]
        assert set(one.open_findings()) == baseline
        actions = [r["action"] for r in engine.audit.export()]
        assert actions.count("readiness.opened") == len(baseline) + 1
        assert actions.count("readiness.resolved") == 1
    pagerduty.close()


def test_the_predicted_rto_is_read_from_route53_and_an_hour_long_ttl_is_a_finding(
    kube: KubeSandbox, kube_engine: Engine, aws: Any, cluster: Any
) -> None:
    """Hand-computed from the sandbox's Route53 and node groups: TTL 60 s + health checks
    (Route53's defaults, 30 s × 3) + a 12 s election + the standby growing 2 → 4 nodes (180 s)
    + 60 s verification = 402 s, against the API's 15 m. The AWS CLI then raises the weighted
    records' TTL to an hour: the prediction exceeds the target and says why."""

    def rto() -> Any:
        report = kube_engine.readiness(actor=ALICE, environment="production", runbook="dr.failover")
        return next(f for f in report.findings if f.subject == "failover RTO")

    before = rto()
    assert before.ok, before.detail
    assert before.detail.startswith("predicted RTO us-east-1 → us-west-2 6m42s (target 15m)")
    zone = aws.cli("route53", "list-hosted-zones-by-name", "--dns-name", "example.com.")
    zone_id = zone["HostedZones"][0]["Id"].rsplit("/", 1)[-1]
    name = "api-production.example.com."
    records = aws.cli(
        "route53", "list-resource-record-sets", "--hosted-zone-id", zone_id,
        "--start-record-name", name,
    )["ResourceRecordSets"]  # fmt: skip
    weighted = [r for r in records if r["Name"] == name]
    assert len(weighted) == 2
    changes = [{"Action": "UPSERT", "ResourceRecordSet": {**r, "TTL": 3600}} for r in weighted]
    batch = {"Changes": changes}
    aws.cli(
        "route53", "change-resource-record-sets", "--hosted-zone-id", zone_id,
        "--change-batch", json.dumps(batch),
    )  # fmt: skip
    after = rto()
    assert not after.ok
    assert "→ us-west-2 1h05m (target 15m): DNS TTL 1h00m + " in after.detail  # 3942 s
    assert "DNS TTL 1h" in after.detail and after.detail.endswith("above the target")


def test_someone_who_is_not_a_person_of_the_policy_is_refused_and_audited(
    kube_engine: Engine,
) -> None:
    stranger = Actor("mallory", "mallory", Origin.CLI)
    with pytest.raises(Refused, match="mallory may not check readiness"):
        kube_engine.readiness(actor=stranger, environment="development")
    (refused,) = [r for r in kube_engine.audit.export() if r["action"].startswith("readiness.")]
    assert (refused["action"], refused["actor"]["id"], refused["outcome"]) == (
        "readiness.refused", "mallory", "not_allowed",
    )  # fmt: skip


def test_open_findings_warn_on_plans_outside_the_hash_and_policy_may_refuse(
    *,
    kube: KubeSandbox,
    sandbox_config: Config,
    tmp_path: Path,
    health: Any,
    aws: Any,
    cluster: Any,
    chat: Chat,
) -> None:
    """After the watch opens a finding (the Slack token revoked: every runbook needs it), a
    plan shows it as a warning while its hash (what approvals bind) stays the same;
    ``dr.status`` says it in its readiness line; where policy says ``when_not_ready:
    refuse`` (selftest in development here) the request is refused, audited, nothing made."""
    doc = sandbox_config.policy.model_dump(mode="json")
    doc["rules"].insert(0, {"runbooks": "selftest", "environments": ["development"],
                            "when_not_ready": "refuse"})  # fmt: skip
    config = Config(
        sandbox_config.directory,
        sandbox_config.environments,
        PolicyFile.model_validate(doc),
        sandbox_config.schedules,
    )
    clock = FakeClock()
    schedule = ReadinessSchedule(interval=1800, first_after=300, reannounce=86400)
    with live_engine(config, tmp_path, clock=clock, kubeconfig=str(kube.kubeconfig)) as engine:

        def plan(runbook: str, environment: str) -> Any:
            return engine.prepare(runbook, {"environment": environment}, actor=ALICE).plan

        # dr.status ends with the readiness line (README says so; `targets:` used to follow).
        assert (
            plan("dr.status", "production")
            .notes[-1]
            .startswith("readiness: not evaluated yet (the bot evaluates every 30m")
        )
        watch = ReadinessWatch(engine, schedule, owner="bot-1")
        watch.tick()
        clock.advance(300)
        assert watch.tick().evaluated
        before = plan("selftest", "development")
        assert before.warnings == []  # development is ready

        chat.hook(chat.slack.url + "/_sandbox/revoke", {"revoked": True})
        clock.advance(1800)
        assert watch.tick().opened == ["*:environment:Slack token:Slack"]
        after = plan("selftest", "development")
        (warning,) = after.warnings
        assert warning.startswith("not ready (readiness, evaluated ")
        assert warning.endswith("Slack token · Slack: Slack auth.test: token_revoked")
        assert after.hash == before.hash  # the warning is not part of what is approved
        (line,) = [n for n in plan("dr.status", "production").notes if n.startswith("readiness")]
        assert line.startswith("readiness: ") and "environment: Slack" in line, line
        assert line.endswith("checked 0.0s ago")

        prepared = engine.prepare("selftest", {"environment": "development"}, actor=ALICE)
        with pytest.raises(Refused, match="selftest in development is not ready"):
            engine.submit(prepared, actor=ALICE)
        assert engine.list(limit=5) == []
        refused = [r for r in engine.audit.export() if r["action"] == "request.refused"]
        assert "1 open readiness finding(s)" in refused[-1]["detail"]["why"]
        # Another environment's plan warns too (policy there only warns, the default).
        assert warning in plan("selftest", "staging").warnings


def test_the_newest_backup_is_judged_by_the_environments_backup_policy(
    *, kube: KubeSandbox, sandbox_config: Config, tmp_path: Path, aws: Any, cluster: Any
) -> None:
    """``mongodb.backup_interval`` is per environment: the AWS CLI puts a dump in production's
    bucket, and eight hours later (a fake clock) it is recent for the nightly policy (24h,
    plus an hour's slack: 25h) but stale for a six-hourly one (6h + 1h = 7h)."""
    dump = tmp_path / "users.bson.gz"
    dump.write_bytes(b"\x1f\x8b sandbox dump")
    key = "s3://app-backups/runbook-bot/2026-12-05T00-00-00Z/app/users.bson.gz"
    aws.cli("s3", "cp", "--only-show-errors", str(dump), key)
    doc = sandbox_config.environments.model_dump(mode="json")
    doc["environments"]["production"]["mongodb"]["backup_interval"] = 6 * 3600
    six_hourly = Config(
        sandbox_config.directory,
        EnvironmentsFile.model_validate(doc),
        sandbox_config.policy,
        sandbox_config.schedules,
    )
    later = time.time() + 8 * 3600  # the object carries moto's real time

    def newest(config: Config, name: str) -> tuple[bool, str]:
        with live_engine(
            config, tmp_path / name, clock=FakeClock(later), kubeconfig=str(kube.kubeconfig)
        ) as engine:
            report = engine.readiness(actor=ALICE, environment="production", runbook="restore.test")
        (found,) = [f for f in report.findings if f.check == "a recent backup"]
        assert found.subject == "backups in app-backups"
        return found.ok, found.detail

    ok, detail = newest(sandbox_config, "nightly")
    assert ok, detail
    assert "runbook-bot/2026-12-05T00-00-00Z" in detail and "8h00m ago" in detail
    ok, detail = newest(six_hourly, "six-hourly")
    assert not ok
    assert detail.endswith(
        "8h00m ago: older than 7h00m (the backup policy: every 6h00m, plus 1h)"
    ), detail
