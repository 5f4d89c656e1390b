"""The session-scoped parts of the fixtures are shared, and nothing else leaks between tests."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import pytest


def handshake(url: str, cafile: Path) -> str:
    """A TLS handshake with the emulator, trusting only ``cafile``; the peer's subject."""
    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return str(tls.version())


@pytest.mark.parametrize("turn", [1, 2])
def test_pagerduty_emulators_share_the_session_ca_and_nothing_else(
    turn: int, pagerduty_emulator: Any, pagerduty_ca: Any, tmp_path: Path
) -> None:
    session_ca = tmp_path / "session-ca.pem"
    pagerduty_ca.cert_pem.write_to_path(str(session_ca))
    assert pagerduty_emulator.ca_path.read_bytes() == session_ca.read_bytes()
    assert handshake(pagerduty_emulator.url, session_ca).startswith("TLS")
    assert pagerduty_emulator.calls() == []  # a new server: nothing from an earlier test
    if turn == 1:
        pagerduty_emulator.state.incidents["PLEAK01"] = {"id": "PLEAK01"}
    else:  # the first turn's incident, when both ran in this worker, is not here
        assert "PLEAK01" not in pagerduty_emulator.state.incidents


def _weights(aws: Any) -> dict[str, int]:
    zone = aws.client("route53").list_hosted_zones_by_name(DNSName="example.com.")
    records = aws.client("route53").list_resource_record_sets(
        HostedZoneId=zone["HostedZones"][0]["Id"]
    )["ResourceRecordSets"]
    return {
        r["SetIdentifier"]: r["Weight"]
        for r in records
        if r["Name"] == "api-production.example.com." and "SetIdentifier" in r
    }


def _instances(aws: Any) -> list[str]:
    group = aws.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["prod-api-use1"]
    )["AutoScalingGroups"][0]
    return sorted(i["InstanceId"] for i in group["Instances"])


def test_the_session_s_aws_is_put_back_where_a_test_wrote_and_only_there(aws: Any) -> None:
    """Backups, secrets and DNS are reseeded alone (the instances keep their ids); a write to
    Auto Scaling reseeds everything (new instance ids). Either way the seed is back."""
    server = aws.server
    mark = len(server.calls)
    assert not server.reseed(mark)  # nothing written: nothing to do
    instances, weights = _instances(aws), _weights(aws)
    assert weights == {"us-east-1": 100, "us-west-2": 0}
    s3 = aws.client("s3")
    s3.put_object(Bucket="app-backups", Key="left-behind", Body=b"x")
    zone = aws.client("route53").list_hosted_zones_by_name(DNSName="example.com.")
    aws.client("route53").change_resource_record_sets(
        HostedZoneId=zone["HostedZones"][0]["Id"],
        ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": {
            "Name": "api.example.com.", "Type": "CNAME", "TTL": 60,
            "ResourceRecords": [{"Value": "api-production.example.com."}]}}]},
    )  # fmt: skip
    assert server.reseed(mark)
    listed = s3.list_objects_v2(Bucket="app-backups")["Contents"]
    assert [o["Key"] for o in listed] == ["mongodb/production/snapshot-latest.archive"]
    assert _weights(aws) == weights and _instances(aws) == instances
    zone = aws.client("route53").list_hosted_zones_by_name(DNSName="example.com.")
    names = aws.client("route53").list_resource_record_sets(
        HostedZoneId=zone["HostedZones"][0]["Id"]
    )["ResourceRecordSets"]
    assert "api.example.com." in {r["Name"] for r in names}

    mark = len(server.calls)
    aws.client("autoscaling").set_desired_capacity(
        AutoScalingGroupName="prod-api-use1", DesiredCapacity=6
    )
    assert server.reseed(mark)
    after = _instances(aws)
    assert len(after) == 4 and not set(after) & set(instances)  # reset and launched anew


def test_the_aws_cli_oracle_answers_as_the_console_script_does(aws: Any) -> None:
    """``AwsWorld.cli`` runs awscli's driver in the test's process; the ``aws`` console script
    gives the same answer."""
    args = ("route53", "list-hosted-zones-by-name", "--dns-name", "example.com.")
    in_process, console = aws.cli(*args), aws.cli_process(*args)
    assert in_process == console and in_process["HostedZones"][0]["Name"] == "example.com."


def test_each_test_s_clusters_are_clones_that_share_nothing(
    kube: Any, _seeded_clusters: dict[str, Any]
) -> None:
    """The ``kube`` fixture's clusters are clones of the session's seeded ones: a rollout in
    the test's cluster leaves the seed as it was, and the next clone starts from the seed."""
    seeded = _seeded_clusters["us-east-1"]
    before = (seeded.rv, len(seeded.objects), len(seeded.history))
    changed = kube.kubectl(
        "set", "image", "deployment/api-deployment", "api=registry.example.com/app-api:9.9.9",
        "-n", "production",
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    cluster = kube.cluster("us-east-1")
    cluster.settle()
    assert cluster.rv > before[0] and cluster.objects is not seeded.objects
    assert (seeded.rv, len(seeded.objects), len(seeded.history)) == before
    images = {
        c["image"]
        for k, o in seeded.objects.items() if k[0] == "apps/deployments"
        for c in o["spec"]["template"]["spec"]["containers"]
    }  # fmt: skip
    assert not any(image.endswith(":9.9.9") for image in images)
    twin = seeded.clone()
    assert twin.objects == seeded.objects and twin.rv == seeded.rv
    seeded_suffixes = {k[2].rsplit("-", 1)[-1] for k in seeded.objects if k[0] == "/pods"}
    assert seeded_suffixes  # a clone draws names after the seed's: no pod name repeats
    assert twin._next_name() not in seeded_suffixes
