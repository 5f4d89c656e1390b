"""AWS through boto3: one adapter per region, clients created on first use.

Clients use the standard retry mode. The endpoint comes from boto3's own configuration
(``AWS_ENDPOINT_URL``, which the sandbox exports for its moto server) unless given. Every
AWS error becomes an ``InfrastructureError`` naming the resource and the region.

DNS layout (checked here, because moto accepts what Route53 refuses): the public name (e.g.
``api.example.com``) is an alias or CNAME to a per-environment traffic name whose *weighted*
records, one per region with the region as set identifier, carry the split. A traffic name
holding anything else (failover, latency or plain records) is refused with the reason.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, BinaryIO, TypeVar, cast

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.parsers import ResponseParserError

from runbooks.engine.clock import iso, parse_iso
from runbooks.interfaces import (
    InfrastructureError,
    Instance,
    NodeGroupState,
    StandaloneInstance,
    StoredObject,
)

T = TypeVar("T")
SCALED_TAG = "runbook-bot:last-scaled-at"
CHANGE_POLL_S = 2.0
CHANGE_TIMEOUT_S = 300.0
#: Listing a backup bucket stops after this many pages of 1000 keys (a status line, not an
#: inventory).
MAX_LIST_PAGES = 20


#: One botocore data loader for every session of the process: a new session otherwise parses
#: the service models again (EC2's is megabytes of JSON): a session with its six clients cost
#: 230 ms, 30 ms with the models already loaded. The loader only reads botocore's own files.
_LOADER = botocore.loaders.create_loader()


def new_session(region: str | None = None) -> boto3.session.Session:
    """A boto3 session (credentials, region and endpoint from boto3's usual configuration)
    on the process's shared model loader."""
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core, region_name=region)


class HostedZoneGone(InfrastructureError):
    """Route53 no longer knows a hosted zone id (the zone was deleted, perhaps created again
    under a new id)."""


class AwsAdapter:
    def __init__(self, region: str, *, endpoint_url: str | None = None) -> None:
        self.region = region
        self._endpoint_url = endpoint_url
        self._session = new_session(region)
        self._config = BotoConfig(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=5,
            read_timeout=30,
        )
        self._clients: dict[str, Any] = {}
        #: Hosted zone ids by zone name, looked up once: Route53 never reuses an id, and a
        #: DR run reads its traffic record a dozen times (each plan, each verification).
        self._zone_ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._session.client(
                    service, config=self._config, endpoint_url=self._endpoint_url
                )
            return self._clients[service]

    def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            kind = (
                HostedZoneGone if error.get("Code") == "NoSuchHostedZone" else InfrastructureError
            )
            raise kind(
                f"{what} in {self.region}: {error.get('Code', 'error')}: "
                f"{error.get('Message', str(exc))}"
            ) from None
        except NoCredentialsError:
            raise InfrastructureError(
                f"{what} in {self.region}: no AWS credentials",
                hint="set AWS_PROFILE or the instance role; in the sandbox, source "
                ".runbook-bot/sandbox/env",
            ) from None
        except BotoCoreError as exc:
            raise InfrastructureError(f"{what} in {self.region}: {exc}") from None
        except ResponseParserError:
            raise InfrastructureError(
                f"{what} in {self.region}: the endpoint's answer could not be parsed (an "
                "emulator that does not implement this call?)"
            ) from None

    # Identity -------------------------------------------------------------------------------
    def caller_identity(self) -> str:
        found = self._call("sts get-caller-identity", self.client("sts").get_caller_identity)
        return str(found.get("Arn") or found.get("Account") or "?")

    # Auto Scaling ---------------------------------------------------------------------------
    def node_group(self, name: str) -> NodeGroupState:
        asg = self.client("autoscaling")
        what = f"autoscaling group {name}"
        found = self._call(what, asg.describe_auto_scaling_groups, AutoScalingGroupNames=[name])
        groups = found.get("AutoScalingGroups", [])
        if not groups:
            raise InfrastructureError(f"{what} does not exist in {self.region}")
        group = groups[0]
        template = group.get("LaunchTemplate") or {}
        stamps: list[float] = []
        for tag in group.get("Tags", []):
            if tag.get("Key") == SCALED_TAG:
                with contextlib.suppress(ValueError):  # a hand-edited tag: ignore it
                    stamps.append(parse_iso(tag["Value"]))
        activities = self._call(
            what, asg.describe_scaling_activities, AutoScalingGroupName=name, MaxRecords=1
        ).get("Activities", [])
        for activity in activities:
            started = activity.get("StartTime")
            if isinstance(started, datetime):
                stamps.append(started.timestamp())
        return NodeGroupState(
            name=name,
            region=self.region,
            minimum=int(group["MinSize"]),
            maximum=int(group["MaxSize"]),
            desired=int(group["DesiredCapacity"]),
            instances=tuple(
                Instance(
                    id=i["InstanceId"],
                    type=i.get("InstanceType", ""),
                    lifecycle=i.get("LifecycleState", ""),
                    health=i.get("HealthStatus", ""),
                )
                for i in group.get("Instances", [])
            ),
            launch_template=template.get("LaunchTemplateName") or template.get("LaunchTemplateId"),
            template_version=template.get("Version"),
            last_scaled_at=max(stamps) if stamps else None,
        )

    def set_desired(self, name: str, desired: int, *, at: float) -> None:
        asg = self.client("autoscaling")
        what = f"autoscaling group {name}"
        self._call(
            what,
            asg.set_desired_capacity,
            AutoScalingGroupName=name,
            DesiredCapacity=desired,
            HonorCooldown=False,  # the runbook enforces the spec's cooldowns itself
        )
        self._call(
            what,
            asg.create_or_update_tags,
            Tags=[
                {
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                    "Key": SCALED_TAG,
                    "Value": iso(at),
                    "PropagateAtLaunch": False,
                }
            ],
        )

    def template_versions(self, template: str) -> list[tuple[int, str, str]]:
        ec2 = self.client("ec2")
        found = self._call(
            f"launch template {template}",
            ec2.describe_launch_template_versions,
            LaunchTemplateName=template,
        )
        return [
            (
                int(v["VersionNumber"]),
                v.get("LaunchTemplateData", {}).get("InstanceType", ""),
                v.get("VersionDescription", ""),
            )
            for v in found.get("LaunchTemplateVersions", [])
        ]

    def create_template_version(
        self, template: str, *, source: str, instance_type: str, description: str
    ) -> int:
        ec2 = self.client("ec2")
        created = self._call(
            f"launch template {template}",
            ec2.create_launch_template_version,
            LaunchTemplateName=template,
            SourceVersion=source,
            VersionDescription=description,
            LaunchTemplateData={"InstanceType": instance_type},
        )
        return int(created["LaunchTemplateVersion"]["VersionNumber"])

    def set_group_template(self, name: str, template: str, version: str) -> None:
        asg = self.client("autoscaling")
        self._call(
            f"autoscaling group {name}",
            asg.update_auto_scaling_group,
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateName": template, "Version": version},
        )

    def replace_instance(self, name: str, instance_id: str) -> None:
        asg = self.client("autoscaling")
        self._call(
            f"instance {instance_id} of {name}",
            asg.terminate_instance_in_auto_scaling_group,
            InstanceId=instance_id,
            ShouldDecrementDesiredCapacity=False,
        )

    def target_health(self, name: str) -> tuple[int, int]:
        asg, elb = self.client("autoscaling"), self.client("elbv2")
        what = f"autoscaling group {name}"
        found = self._call(what, asg.describe_auto_scaling_groups, AutoScalingGroupNames=[name])
        groups = found.get("AutoScalingGroups", [])
        if not groups:
            raise InfrastructureError(f"{what} does not exist in {self.region}")
        members = {i["InstanceId"] for i in groups[0].get("Instances", [])}
        healthy = total = 0
        for arn in groups[0].get("TargetGroupARNs", []):
            targets = self._call(
                f"target group {arn.rsplit('/', 2)[-2]}",
                elb.describe_target_health,
                TargetGroupArn=arn,
            ).get("TargetHealthDescriptions", [])
            # Only the group's current instances count: a replaced instance drains out of the
            # target group for a while (and moto never removes it).
            current = [t for t in targets if t["Target"]["Id"] in members]
            total += len(current)
            healthy += sum(1 for t in current if t["TargetHealth"]["State"] == "healthy")
        return healthy, total

    # EC2 instances outside groups ------------------------------------------------------------
    def standalone(self, name: str) -> StandaloneInstance:
        ec2 = self.client("ec2")
        what = f"instance {name}"
        found = self._call(
            what,
            ec2.describe_instances,
            Filters=[
                {"Name": "tag:Name", "Values": [name]},
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                },
            ],
        )
        instances = [i for r in found.get("Reservations", []) for i in r.get("Instances", [])]
        if not instances:
            raise InfrastructureError(f"no live instance named {name} in {self.region}")
        if len(instances) > 1:
            ids = ", ".join(sorted(i["InstanceId"] for i in instances))
            raise InfrastructureError(
                f"{len(instances)} instances are named {name} in {self.region} ({ids}); "
                "the Name tag must be unique"
            )
        instance = instances[0]
        statuses = self._call(
            what,
            ec2.describe_instance_status,
            InstanceIds=[instance["InstanceId"]],
            IncludeAllInstances=True,
        ).get("InstanceStatuses", [])
        status_ok = bool(statuses) and all(
            statuses[0].get(key, {}).get("Status") == "ok"
            for key in ("InstanceStatus", "SystemStatus")
        )
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        return StandaloneInstance(
            id=instance["InstanceId"],
            name=name,
            type=instance.get("InstanceType", ""),
            state=instance.get("State", {}).get("Name", ""),
            status_ok=status_ok,
            group=tags.get("aws:autoscaling:groupName"),
        )

    def stop_instance(self, instance_id: str) -> None:
        ec2 = self.client("ec2")
        self._call(f"instance {instance_id}", ec2.stop_instances, InstanceIds=[instance_id])

    def start_instance(self, instance_id: str) -> None:
        ec2 = self.client("ec2")
        self._call(f"instance {instance_id}", ec2.start_instances, InstanceIds=[instance_id])

    def set_instance_type(self, instance_id: str, instance_type: str) -> None:
        ec2 = self.client("ec2")
        self._call(
            f"instance {instance_id}",
            ec2.modify_instance_attribute,
            InstanceId=instance_id,
            InstanceType={"Value": instance_type},
        )

    # S3 ---------------------------------------------------------------------------------------
    def latest_object(self, bucket: str) -> tuple[str, float] | None:
        s3 = self.client("s3")
        newest: tuple[str, float] | None = None
        token: str | None = None
        for _ in range(MAX_LIST_PAGES):
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(f"bucket {bucket}", s3.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                modified = item["LastModified"].timestamp()
                if newest is None or modified > newest[1]:
                    newest = (str(item["Key"]), modified)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
        return newest

    def objects(self, bucket: str, prefix: str = "") -> list[StoredObject]:
        s3 = self.client("s3")
        found: list[StoredObject] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(f"bucket {bucket}", s3.list_objects_v2, **kwargs)
            found += [
                StoredObject(str(item["Key"]), int(item["Size"]), item["LastModified"].timestamp())
                for item in page.get("Contents", [])
            ]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return found

    def read_object(self, bucket: str, key: str) -> BinaryIO:
        answer = self._call(
            f"s3://{bucket}/{key}", self.client("s3").get_object, Bucket=bucket, Key=key
        )
        return io.BufferedReader(_Reader(answer["Body"], f"s3://{bucket}/{key} in {self.region}"))

    def delete_objects(self, bucket: str, keys: list[str]) -> None:
        s3 = self.client("s3")
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            answer = self._call(
                f"bucket {bucket}",
                s3.delete_objects,
                Bucket=bucket,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise InfrastructureError(
                    f"bucket {bucket} in {self.region}: could not delete {len(errors)} "
                    f"object(s), e.g. {first.get('Key')}: {first.get('Message')}"
                )

    @contextlib.contextmanager
    def write_object(self, bucket: str, key: str) -> Iterator[BinaryIO]:
        writer = _MultipartWriter(self, bucket, key)
        try:
            yield cast(BinaryIO, writer)
            writer.complete()
        except BaseException:
            writer.abort()
            raise

    # Route53 ------------------------------------------------------------------------------------
    def health_checks(self, domain: str) -> list[tuple[str, int, int]]:
        route53 = self.client("route53")
        suffix = domain.rstrip(".")
        found = self._call("Route53 health checks", route53.list_health_checks)
        result = []
        for check in found.get("HealthChecks", []):
            config = check.get("HealthCheckConfig", {})
            host = str(config.get("FullyQualifiedDomainName", ""))
            if not host.rstrip(".").endswith(suffix):
                continue
            scheme = "https" if str(config.get("Type", "")).startswith("HTTPS") else "http"
            target = f"{scheme}://{host}{config.get('ResourcePath', '')}"
            observations = self._call(
                f"health check {check['Id']}",
                route53.get_health_check_status,
                HealthCheckId=check["Id"],
            ).get("HealthCheckObservations", [])
            healthy = sum(
                1
                for o in observations
                if str(o.get("StatusReport", {}).get("Status", "")).startswith("Success")
            )
            result.append((target, healthy, len(observations)))
        return sorted(result)

    def _zone_id(self, zone: str) -> str:
        name = zone if zone.endswith(".") else zone + "."
        with self._lock:
            known = self._zone_ids.get(name)
        if known is not None:
            return known
        route53 = self.client("route53")
        found = self._call(f"hosted zone {name}", route53.list_hosted_zones_by_name, DNSName=name)
        for candidate in found.get("HostedZones", []):
            if candidate["Name"] == name:
                zone_id = str(candidate["Id"]).rsplit("/", 1)[-1]
                with self._lock:
                    self._zone_ids[name] = zone_id
                return zone_id
        raise InfrastructureError(f"hosted zone {name} does not exist")

    def _in_zone(self, zone: str, use: Callable[[str], T]) -> T:
        """``use(zone_id)``; when a remembered id is gone, once more with a fresh lookup."""
        name = zone if zone.endswith(".") else zone + "."
        with self._lock:
            remembered = name in self._zone_ids
        try:
            return use(self._zone_id(zone))
        except HostedZoneGone:
            if not remembered:
                raise
            with self._lock:
                self._zone_ids.pop(name, None)
            return use(self._zone_id(zone))

    def _weighted(self, zone_id: str, record: str) -> list[dict[str, Any]]:
        route53 = self.client("route53")
        name = record if record.endswith(".") else record + "."
        found = self._call(
            f"records of {name}",
            route53.list_resource_record_sets,
            HostedZoneId=zone_id,
            StartRecordName=name,
        )
        records = [r for r in found.get("ResourceRecordSets", []) if r["Name"] == name]
        if not records:
            raise InfrastructureError(f"{name} has no records in its hosted zone")
        wrong = [r for r in records if "Weight" not in r or "SetIdentifier" not in r]
        if wrong:
            kinds = sorted({_routing(r) for r in wrong})
            raise InfrastructureError(
                f"DNS layout: {name} must hold only weighted records (one per region, the region "
                f"as set identifier), but it also holds {', '.join(kinds)} records; Route53 "
                "refuses mixed routing policies on one name",
                hint="see the DNS layout in docs/aws.md",
            )
        return records

    def traffic_ttl(self, zone: str, record: str) -> int:
        records = self._in_zone(zone, lambda zone_id: self._weighted(zone_id, record))
        return max(int(r.get("TTL", 0)) for r in records)

    def health_check_timing(self, domain: str) -> list[tuple[str, int, int]]:
        route53 = self.client("route53")
        suffix = domain.rstrip(".")
        found = self._call("Route53 health checks", route53.list_health_checks)
        timing = []
        for check in found.get("HealthChecks", []):
            config = check.get("HealthCheckConfig", {})
            host = str(config.get("FullyQualifiedDomainName", ""))
            if not host.rstrip(".").endswith(suffix):
                continue
            # Route53's defaults when the check does not set them: every 30 s, 3 failures.
            timing.append(
                (
                    host,
                    int(config.get("RequestInterval") or 30),
                    int(config.get("FailureThreshold") or 3),
                )
            )
        return sorted(timing)

    def traffic_weights(self, zone: str, record: str) -> dict[str, int]:
        records = self._in_zone(zone, lambda zone_id: self._weighted(zone_id, record))
        return {r["SetIdentifier"]: int(r["Weight"]) for r in records}

    def set_traffic_weights(self, zone: str, record: str, weights: dict[str, int]) -> None:
        self._in_zone(zone, lambda zone_id: self._set_weights(zone_id, record, weights))

    def _set_weights(self, zone_id: str, record: str, weights: dict[str, int]) -> None:
        route53 = self.client("route53")
        records = self._weighted(zone_id, record)
        known = {r["SetIdentifier"] for r in records}
        unknown = set(weights) - known
        if unknown:
            raise InfrastructureError(
                f"{record} has no weighted record for {', '.join(sorted(unknown))}; "
                f"it has: {', '.join(sorted(known))}"
            )
        changes = []
        for current in records:
            weight = weights.get(current["SetIdentifier"])
            if weight is None or int(current["Weight"]) == weight:
                continue
            changes.append({"Action": "UPSERT", "ResourceRecordSet": {**current, "Weight": weight}})
        if not changes:
            return
        answer = self._call(
            f"records of {record}",
            route53.change_resource_record_sets,
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": "runbook-bot traffic weights", "Changes": changes},
        )
        change_id = answer["ChangeInfo"]["Id"]
        self._wait_insync(change_id)

    def _wait_insync(self, change_id: str) -> None:
        import time

        route53 = self.client("route53")
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        while True:
            status = self._call(f"change {change_id}", route53.get_change, Id=change_id)
            if status["ChangeInfo"]["Status"] == "INSYNC":
                return
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"Route53 change {change_id} not in sync after {CHANGE_TIMEOUT_S:g}s"
                )
            time.sleep(CHANGE_POLL_S)


def _routing(record: dict[str, Any]) -> str:
    for key, label in (
        ("Failover", "failover"),
        ("Region", "latency"),
        ("GeoLocation", "geolocation"),
        ("MultiValueAnswer", "multivalue"),
    ):
        if key in record:
            return label
    return "simple"


#: S3's smallest part (all but the last) is 5 MiB; parts of 8 MiB keep memory flat and few.
PART_BYTES = 8 * 1024 * 1024


class _MultipartWriter(io.RawIOBase):
    """A write-only file uploading ``PART_BYTES`` parts as it fills (multipart upload).

    Memory stays at one part however large the object. An object smaller than one part is
    sent with one PutObject. ``abort`` removes the parts of an upload that failed.
    """

    def __init__(self, adapter: AwsAdapter, bucket: str, key: str) -> None:
        super().__init__()
        self.adapter, self.bucket, self.key = adapter, bucket, key
        self.what = f"s3://{bucket}/{key}"
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        while len(self.buffer) >= PART_BYTES:
            self._send(bytes(self.buffer[:PART_BYTES]))
            del self.buffer[:PART_BYTES]
        return len(data)

    def _send(self, body: bytes) -> None:
        s3 = self.adapter.client("s3")
        if self.upload_id is None:
            started = self.adapter._call(
                self.what, s3.create_multipart_upload, Bucket=self.bucket, Key=self.key
            )
            self.upload_id = str(started["UploadId"])
        number = len(self.parts) + 1
        answer = self.adapter._call(
            self.what,
            s3.upload_part,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=body,
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self) -> None:
        s3 = self.adapter.client("s3")
        if self.upload_id is None:
            self.adapter._call(
                self.what, s3.put_object, Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer)
            )
            return
        if self.buffer:
            self._send(bytes(self.buffer))
            self.buffer.clear()
        self.adapter._call(
            self.what,
            s3.complete_multipart_upload,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )

    def abort(self) -> None:
        self.buffer.clear()
        if self.upload_id is not None:
            with contextlib.suppress(InfrastructureError):
                self.adapter._call(
                    self.what,
                    self.adapter.client("s3").abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                )


class _Reader(io.RawIOBase):
    """A streaming S3 body whose read errors name the object (botocore's are anonymous)."""

    def __init__(self, body: Any, what: str) -> None:
        super().__init__()
        self.body, self.what = body, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            chunk = self.body.read(len(buffer))
        except (BotoCoreError, OSError) as exc:
            raise InfrastructureError(f"{self.what}: read failed: {exc}") from None
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.body.close()
        super().close()
