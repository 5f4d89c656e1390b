"""DR runbooks against the sandbox's moto server and Kubernetes emulators.

Most tests run on ``kube_engine``: the runbook's settles, health-check intervals and soaks
advance a fake clock at once. Four stay on the wall clock (``wall_engine``) because something
outside the engine moves in real time while the runbook waits: the Atlas emulator's election
(measured against its delay) and a signal that turns bad mid-soak from another thread."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from runbooks.engine.clock import format_duration
from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput, Refused
from runbooks.engine.models import Actor, Execution, Origin, State
from tests.conftest import AwsWorld, KubeSandbox
from tests.support.kube_runs import DEPLOY
from tests.support.people import ALICE, BOB

REGIONS = ("us-east-1", "us-west-2")

DAVE = Actor("dave", "Dave", Origin.SLACK)


def _status(engine: Engine) -> list[str]:
    prepared = engine.prepare("dr.status", {}, actor=ALICE)
    execution = engine.submit(prepared, actor=ALICE)
    done = engine.start(execution.id, actor=ALICE)
    assert done.state == State.SUCCEEDED, done.error
    return done.plan.notes


def test_status_reports_each_component_by_region(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    cluster.lag["US_WEST_2"] = 4.0
    health.set_error_rate("us-west-2", 0.031)
    notes = _status(kube_engine)
    assert notes[0] == (
        "DNS api.example.com. → api-production.example.com.: weights us-east-1 100, "
        "us-west-2 0; active: us-east-1"
    )
    assert notes[1] == (
        "Route53 health checks: https://api-us-east-1.example.com/health OK (1/1 checkers); "
        "https://api-us-west-2.example.com/health OK (1/1 checkers)"
    )
    assert notes[2].startswith(
        "compute us-east-1 (primary, ACTIVE): node group prod-api-use1 "
        "4/4 in service (bounds 4-10); api: api-deployment 3/3 ready"
    )
    assert notes[2].endswith("; error rate 0.20 %")
    assert notes[3].startswith("compute us-west-2: node group prod-api-usw2 2/2 in service")
    assert notes[3].endswith("; error rate 3.10 %")
    # Scoped to the environment and region; no 5xx series is 0 (``or vector(0)``).
    assert health.queries[-1] == (
        '(sum(rate(http_requests_total{environment="production",region="us-west-2",'
        'code=~"5.."}[5m])) or vector(0)) / '
        'sum(rate(http_requests_total{environment="production",region="us-west-2"}[5m]))'
    )
    assert notes[4] == "database (atlas): primary in us-east-1; replication lag: us-west-2 4.0s"
    assert notes[5].startswith(
        "backups: latest in app-backups: mongodb/production/snapshot-latest.archive at "
    )
    assert notes[6:8] == [
        "last partial failover test: none recorded",
        "last failover/failback: none recorded",
    ]
    assert any(n.startswith("targets: api RTO 15m") for n in notes)
    assert kube_engine.list()[0].plan.read_only


def test_status_still_reports_when_a_component_cannot_be_read(
    kube_engine: Engine, aws: AwsWorld
) -> None:
    aws.client("autoscaling", "us-west-2").delete_auto_scaling_group(
        AutoScalingGroupName="prod-api-usw2", ForceDelete=True
    )
    notes = _status(kube_engine)
    assert "active: us-east-1" in notes[0]
    assert (
        "node group prod-api-usw2: cannot read (autoscaling group prod-api-usw2 does not "
        "exist in us-west-2)"
    ) in notes[3]
    assert "api: api-deployment 3/3 ready" in notes[3]
    # no database configured in this process's environment: said, not fatal
    assert notes[4].startswith(
        "database (atlas): cannot read (production database: PRODUCTION_MONGODB_URI is not set"
    )


def _weights(aws: AwsWorld) -> dict[str, int]:
    """Read by the AWS CLI, independently of the adapter."""
    zone = aws.cli("route53", "list-hosted-zones-by-name")["HostedZones"][0]["Id"]
    records = aws.cli("route53", "list-resource-record-sets", "--hosted-zone-id", zone)
    return {
        r["SetIdentifier"]: r["Weight"]
        for r in records["ResourceRecordSets"]
        if r["Name"] == "api-production.example.com."
    }


def _desired(aws: AwsWorld, name: str, region: str) -> int:
    return int(aws.group(name, region)["DesiredCapacity"])


def _run(engine: Engine, name: str, params: dict[str, Any], **submit: Any) -> Execution:
    prepared = engine.prepare(
        name, params, actor=ALICE, break_glass=bool(submit.get("break_glass"))
    )
    execution = engine.submit(prepared, actor=ALICE, **submit)
    for approver in (BOB, DAVE):
        if execution.state == State.AWAITING_APPROVAL:
            execution = engine.approve(execution.id, actor=approver, plan_hash=execution.plan.hash)
    return engine.start(execution.id, actor=ALICE)


def test_failover_then_failback(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    done = _run(kube_engine, "dr.failover", {"region": "us-west-2"})
    assert done.state == State.SUCCEEDED, done.error
    assert [s["description"] for s in done.plan.steps] == [
        "set node group prod-api-usw2 in production (us-west-2): 2 → 4 instances, wait until "
        "all are in service",
        "promote the production database in us-west-2 (move its primary there)",
        "shift traffic of api-production.example.com.: us-east-1 100/us-west-2 0 → "
        "us-east-1 0/us-west-2 100",
        "verify us-west-2: prod-api-usw2 targets healthy and "
        f"{health.url}/us-west-2/health answers 200 3 times in a row and error rate at most 5 %",
    ]
    assert not done.plan.steps[1]["reversible"]
    assert "dr.failback" in done.plan.steps[1]["irreversible_reason"]
    assert _weights(aws) == {"us-east-1": 0, "us-west-2": 100}
    assert _desired(aws, "prod-api-usw2", "us-west-2") == 4
    assert _desired(aws, "prod-api-use1", "us-east-1") == 4  # the old region keeps running
    assert cluster.primary == "US_WEST_2"
    (rto,) = [line for line in done.steps[-1].output if line.startswith("RTO achieved ")]
    assert rto.endswith("(target 15m): met")
    (measure,) = done.steps[-1].measures
    assert measure["name"] == "RTO" and measure["target"] == 900
    assert 0 <= measure["seconds"] <= 900
    # three times in preflight (the plan, the re-plan when the last approval lands, the
    # re-plan before the first step), then 3 times to verify
    assert health.server.hits.get("us-west-2") == 6
    assert "error rate in us-west-2: 0.20 % (limit 5 %)" in done.steps[-1].output

    assert any(n.startswith("us-east-1 keeps running (for a failback)") for n in done.plan.notes)
    back = _run(kube_engine, "dr.failback", {})
    assert back.state == State.SUCCEEDED, back.error
    (kept,) = [n for n in back.plan.notes if "keeps running" in n]
    assert kept.startswith(
        "us-west-2 keeps running (as the standby for the next failover); its capacity is not "
        "reduced"
    ), kept
    assert _weights(aws) == {"us-east-1": 100, "us-west-2": 0}
    assert cluster.primary == "US_EAST_1"
    again = kube_engine.prepare("dr.failback", {}, actor=ALICE)
    assert again.plan.steps == [] and "already serves from us-east-1" in again.plan.notes[-1]
    last = [n for n in _status(kube_engine) if n.startswith("last failover/failback: ")]
    assert last[0].endswith(f"SUCCEEDED ({back.id}: failback: us-west-2 → us-east-1)")


def test_promotions_measure_their_election_and_the_predicted_rto_counts_the_slowest(
    wall_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    """The promotion step measures its election (request to the primary seen in the target
    region); the predicted RTO then counts the slowest of the last measured elections instead
    of the default 12 s. The Atlas emulator elects ``election_delay`` after the request: no
    measure can be shorter."""

    def predicted() -> str:
        report = wall_engine.readiness(actor=ALICE, environment="production", runbook="dr.failover")
        (found,) = [f for f in report.findings if f.subject == "failover RTO"]
        return found.detail

    assert " + primary election 12.0s + " in predicted()
    elections = []
    for runbook, params in (("dr.failover", {"region": "us-west-2"}), ("dr.failback", {})):
        done = _run(wall_engine, runbook, params)
        assert done.state == State.SUCCEEDED, done.error
        (promote,) = [s for s in done.steps if s.kind == "db.promote"]
        (measure,) = promote.measures
        assert measure["name"] == "primary election" and measure["target"] is None
        assert measure["seconds"] >= cluster.election_delay
        assert any(line.startswith("primary election achieved ") for line in promote.output)
        elections.append(measure["seconds"])
    slowest = format_duration(max(elections))
    assert f" + primary election (slowest of the last 2 measured) {slowest} + " in predicted()


def test_a_scale_up_is_measured_and_the_predicted_rto_counts_it(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    """The node-capacity step measures its scale-up (desired set to all in service); a
    failover's predicted RTO then counts the slowest measured instead of the constant
    3 minutes a node was presumed to take."""

    def predicted() -> str:
        report = kube_engine.readiness(actor=ALICE, environment="production", runbook="dr.failover")
        (found,) = [f for f in report.findings if f.subject == "failover RTO"]
        return found.detail

    before = predicted()
    assert "standby scale-up 2 → 4 nodes 3m + " in before, before
    done = _run(kube_engine, "dr.failover", {"region": "us-west-2"})
    assert done.state == State.SUCCEEDED, done.error
    ups = [m for s in done.steps if s.kind == "aws.node_capacity" for m in s.measures]
    assert [m["name"] for m in ups] == ["node group scale-up"], ups
    seconds = ups[0]["seconds"]
    assert 0 <= seconds < 180
    back = _run(kube_engine, "dr.failback", {})
    assert back.state == State.SUCCEEDED, back.error
    # The standby back at 2 nodes (the AWS CLI), so a failover must scale it up again.
    aws.cli("autoscaling", "set-desired-capacity", "--auto-scaling-group-name", "prod-api-usw2",
            "--desired-capacity", "2", region="us-west-2")  # fmt: skip
    after = predicted()
    assert "standby scale-up 2 → 4 nodes (slowest of the last" in after, after
    assert "nodes 3m + " not in after, after


def test_failover_refused_when_lag_exceeds_the_rpo(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    cluster.lag["US_WEST_2"] = 600.0
    with pytest.raises(Refused) as caught:
        kube_engine.prepare("dr.failover", {"region": "us-west-2"}, actor=ALICE)
    assert "replication lag in us-west-2 is 10m, beyond the database RPO of 5m" in (
        caught.value.message
    )
    assert "--accept-data-loss" in (caught.value.hint or "")
    with pytest.raises(Refused):  # break-glass alone is not enough
        kube_engine.prepare("dr.failover", {"region": "us-west-2"}, actor=ALICE, break_glass=True)
    with pytest.raises(InvalidInput):  # and accepting data loss needs break-glass
        kube_engine.prepare(
            "dr.failover", {"region": "us-west-2", "accept_data_loss": True}, actor=ALICE
        )
    prepared = kube_engine.prepare(
        "dr.failover",
        {"region": "us-west-2", "accept_data_loss": True},
        actor=ALICE,
        break_glass=True,
    )
    assert any(n.startswith("DATA LOSS ACCEPTED (break-glass)") for n in prepared.plan.notes)
    assert _weights(aws) == {"us-east-1": 100, "us-west-2": 0}
    assert cluster.primary == "US_EAST_1" and cluster.patches == []


def test_failover_to_an_unhealthy_region_is_refused_before_anything_changes(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    health.fail("us-west-2")
    with pytest.raises(Refused) as caught:
        kube_engine.prepare("dr.failover", {"region": "us-west-2"}, actor=ALICE)
    assert caught.value.message.startswith(
        f"us-west-2 is not healthy: {health.url}/us-west-2/health answered 503. Failing over "
        "to it would promote the database there (irreversible)"
    )
    assert "--break-glass" in (caught.value.hint or "")
    health.fail("us-west-2", failing=False)
    health.set_error_rate("us-west-2", 0.12)
    with pytest.raises(Refused, match=r"its error rate is 12 %, above the rollback trigger of 5 %"):
        kube_engine.prepare("dr.failover", {"region": "us-west-2"}, actor=ALICE)
    assert _weights(aws) == {"us-east-1": 100, "us-west-2": 0}
    assert cluster.primary == "US_EAST_1" and kube_engine.list() == []
    # Each refusal is audited as the person's refused request, with the reason.
    refused = [r for r in kube_engine.audit.tail(50) if r["action"] == "request.refused"]
    assert [(r["actor"]["id"], r["target"]["runbook"]) for r in refused] == [
        ("alice", "dr.failover"),
        ("alice", "dr.failover"),
    ]
    assert "answered 503" in refused[0]["detail"]["error"]
    assert "above the rollback trigger" in refused[1]["detail"]["error"]


def test_a_failed_failover_that_stranded_the_database_is_flagged_and_recovered(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    """The walkthrough's sequence: us-west-2 answers 503, the failover goes ahead anyway (now
    only with break-glass), promotes the database, fails verification and moves traffic back,
    leaving traffic in us-east-1 and the database primary in us-west-2."""
    health.fail("us-west-2")
    done = _run(
        kube_engine,
        "dr.failover",
        {"region": "us-west-2"},
        break_glass=True,
        reason="us-east-1 is burning",
        incident="PD-77",
    )
    assert any(n.startswith("BREAK-GLASS: going ahead although us-west-2") for n in done.plan.notes)
    assert done.state == State.COMPENSATED
    assert "health answered 503" in (done.error or "")
    assert _weights(aws) == {"us-east-1": 100, "us-west-2": 0}  # traffic back
    assert _desired(aws, "prod-api-usw2", "us-west-2") == 2  # capacity back
    assert cluster.primary == "US_WEST_2"  # the promotion cannot be undone, and it says so
    assert (
        "NOT UNDONE: step 2 (promote the production database in us-west-2 (move its primary "
        "there)) stays done: the new primary takes writes at once"
    ) in (done.error or "")
    # dr.status says so first; failback and failover to us-east-1 plan the way back.
    assert _status(kube_engine)[0].startswith(
        "SPLIT: traffic goes to us-east-1 but the database primary is in us-west-2"
    )
    for name, params in (("dr.failover", {"region": "us-east-1"}), ("dr.failback", {})):
        plan = kube_engine.prepare(name, params, actor=ALICE).plan
        assert [s["description"] for s in plan.steps] == [
            "promote the production database in us-east-1 (move its primary there)"
        ], name
        assert "SPLIT: traffic is in us-east-1" in " ".join(plan.notes)
    health.fail("us-west-2", failing=False)
    assert any(n.startswith("us-east-1 keeps running (for a failback)") for n in done.plan.notes)
    back = _run(kube_engine, "dr.failback", {})
    assert back.state == State.SUCCEEDED, back.error
    # Traffic never left us-east-1: the way back moves only the database (no "keeps running").
    assert not [n for n in back.plan.notes if "keeps running" in n], back.plan.notes
    assert cluster.primary == "US_EAST_1"
    assert _weights(aws) == {"us-east-1": 100, "us-west-2": 0}
    assert not _status(kube_engine)[0].startswith("SPLIT")


def test_failover_whose_error_rate_rises_after_preflight_compensates(
    wall_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    def rise_during_verification() -> None:
        # Three preflight checks (the plan, the last approval's re-plan, the re-plan before
        # the first step), then the first of verification's three.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if health.server.hits.get("us-west-2", 0) >= 4:
                health.set_error_rate("us-west-2", 0.12)
                return
            time.sleep(0.02)

    riser = threading.Thread(target=rise_during_verification)
    riser.start()
    done = _run(wall_engine, "dr.failover", {"region": "us-west-2"})
    riser.join()
    assert done.state == State.COMPENSATED
    assert "error rate in us-west-2 is 12 %, above the rollback trigger of 5 %" in (
        done.error or ""
    )
    assert _weights(aws) == {"us-east-1": 100, "us-west-2": 0}
    assert _desired(aws, "prod-api-usw2", "us-west-2") == 2


def test_failover_verifies_without_an_unreachable_prometheus_and_says_so(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    """Prometheus may have died with the failed region: health checks still gate the
    verification, and the report says the error rate was not checked."""
    health.server.prometheus_up = False
    done = _run(kube_engine, "dr.failover", {"region": "us-west-2"})
    assert done.state == State.SUCCEEDED, done.error
    assert _weights(aws) == {"us-east-1": 0, "us-west-2": 100}
    [line] = [o for o in done.steps[-1].output if "error rate" in o]
    assert line.startswith("error rate NOT CHECKED: Prometheus at http://127.0.0.1:")
    assert "(503)" in line


def test_failover_dry_run_changes_nothing(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any, kube: KubeSandbox
) -> None:
    def snapshot() -> Any:
        return (
            _weights(aws),
            aws.client("autoscaling", "us-east-1").describe_auto_scaling_groups()[
                "AutoScalingGroups"
            ],
            aws.client("autoscaling", "us-west-2").describe_auto_scaling_groups()[
                "AutoScalingGroups"
            ],
            cluster.cluster_doc(),
            cluster.primary,
            [kube.cluster(r).get(DEPLOY, "production", "api-deployment")["spec"] for r in REGIONS],
        )

    before = snapshot()
    prepared = kube_engine.prepare("dr.failover", {"region": "us-west-2"}, actor=ALICE)
    kube_engine.dry_run(prepared, actor=ALICE)
    assert len(prepared.plan.steps) == 4
    assert snapshot() == before
    assert kube_engine.list() == []


def test_failover_to_the_active_region_or_an_unknown_one(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    same = kube_engine.prepare("dr.failover", {"region": "us-east-1"}, actor=ALICE)
    assert same.plan.steps == [] and "already serves from us-east-1" in same.plan.notes[-1]
    with pytest.raises(InvalidInput) as caught:
        kube_engine.prepare("dr.failover", {"region": "eu-west-1"}, actor=ALICE)
    assert "unknown region 'eu-west-1' for production; known: us-east-1, us-west-2" in (
        caught.value.message
    )


def test_partial_failover_moves_a_share_soaks_and_moves_it_back(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    done = _run(kube_engine, "dr.failover", {"region": "us-west-2", "partial": "10", "soak": "2s"})
    assert done.state == State.SUCCEEDED, done.error
    assert done.plan.steps[0]["description"] == (
        "shift traffic of api-production.example.com.: us-east-1 100/us-west-2 0 → "
        "us-east-1 90/us-west-2 10"
    )
    assert done.plan.steps[1]["description"].startswith("soak 2.0s in us-west-2, watching")
    assert _weights(aws) == {"us-east-1": 100, "us-west-2": 0}  # back after the soak
    assert health.server.hits.get("us-west-2", 0) >= 3  # watched during the soak
    assert cluster.primary == "US_EAST_1" and cluster.patches == []  # database untouched
    assert _desired(aws, "prod-api-usw2", "us-west-2") == 2  # capacity untouched
    drills = [n for n in _status(kube_engine) if n.startswith("last ")]
    assert drills[0].endswith(
        f"SUCCEEDED ({done.id}: partial failover test: 10 % to us-west-2 for 2.0s)"
    )
    assert drills[1] == "last failover/failback: none recorded"


def _good_checks(error: str | None) -> int:
    found = re.search(r"bad signal after (\d+) good checks", error or "")
    assert found, error
    return int(found.group(1))


def test_partial_failover_with_a_bad_signal_mid_soak_moves_traffic_back(
    wall_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    prepared = wall_engine.prepare(
        "dr.failover", {"region": "us-west-2", "partial": "10", "soak": "30s"}, actor=ALICE
    )
    execution = wall_engine.submit(prepared, actor=ALICE)
    for approver in (BOB, DAVE):
        execution = wall_engine.approve(execution.id, actor=approver, plan_hash=execution.plan.hash)
    seen_split: list[dict[str, int]] = []

    def break_mid_soak() -> None:
        # Wait until the split is live and a few checks passed, then make the region fail.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if health.server.hits.get("us-west-2", 0) >= 2:
                seen_split.append(_weights(aws))
                health.fail("us-west-2")
                return
            time.sleep(0.05)

    breaker = threading.Thread(target=break_mid_soak)
    breaker.start()
    done = wall_engine.start(execution.id, actor=ALICE)
    breaker.join()
    assert seen_split == [{"us-east-1": 90, "us-west-2": 10}]
    assert done.state == State.COMPENSATED
    assert "bad signal after" in (done.error or "") and "answered 503" in (done.error or "")
    # Aborted at the first check after the signal, not after the 30 s soak (7 checks).
    assert _good_checks(done.error) <= 3, done.error
    assert _weights(aws) == {"us-east-1": 100, "us-west-2": 0}
    assert cluster.patches == []


def test_partial_failover_aborts_when_the_error_rate_rises_mid_soak(
    wall_engine: Engine, aws: AwsWorld, cluster: Any, health: Any
) -> None:
    prepared = wall_engine.prepare(
        "dr.failover", {"region": "us-west-2", "partial": "10", "soak": "30s"}, actor=ALICE
    )
    assert "error rate (at most 5 %)" in prepared.plan.steps[1]["description"]
    execution = wall_engine.submit(prepared, actor=ALICE)
    for approver in (BOB, DAVE):
        execution = wall_engine.approve(execution.id, actor=approver, plan_hash=execution.plan.hash)

    def degrade_mid_soak() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if sum('region="us-west-2"' in q for q in health.queries) >= 2:
                health.set_error_rate("us-west-2", 0.07)
                return
            time.sleep(0.05)

    degrader = threading.Thread(target=degrade_mid_soak)
    degrader.start()
    done = wall_engine.start(execution.id, actor=ALICE)
    degrader.join()
    assert done.state == State.COMPENSATED
    error = done.error or ""
    assert "bad signal after" in error and "error rate in us-west-2 is 7 % (limit 5 %)" in error
    assert _good_checks(error) <= 3, error
    assert _weights(aws) == {"us-east-1": 100, "us-west-2": 0}


def test_dns_reads_look_the_hosted_zone_up_once_and_again_when_it_was_recreated(
    aws: AwsWorld,
) -> None:
    """A DR run reads the traffic record's weights and TTL at each of its three plans and
    after it moves traffic: the hosted zone's id is looked up once per adapter (an id is
    never reused, so a remembered one cannot point at another zone). A zone deleted and
    created again gets a new id; the read that finds the old one gone looks it up again.
    moto's request log is the oracle for the lookups, the AWS CLI for the weights."""
    from runbooks.adapters.aws import AwsAdapter

    zone, record = "example.com.", "api-production.example.com."

    def lookups() -> int:
        return sum(1 for call in aws.server.calls if "hostedzonesbyname" in call[1])

    def zone_id() -> str:
        return str(aws.cli("route53", "list-hosted-zones-by-name")["HostedZones"][0]["Id"])

    adapter = AwsAdapter("us-east-1")
    before = lookups()
    assert adapter.traffic_weights(zone, record) == _weights(aws)
    adapter.traffic_ttl(zone, record)
    adapter.set_traffic_weights(zone, record, adapter.traffic_weights(zone, record))
    assert lookups() - before == 1 + 1  # the adapter's one, the CLI oracle's one
    old = zone_id()
    aws.server.reset()  # the zone is gone; the seed creates it again, with a new id
    aws.server.seed()
    assert zone_id() != old
    before = lookups()
    assert adapter.traffic_weights(zone, record) == _weights(aws)
    # The remembered id is refused (NoSuchHostedZone); one lookup again, and the oracle's.
    assert lookups() - before == 1 + 1
