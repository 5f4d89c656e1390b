"""The sandbox's AWS: a moto server seeded with the spec's values.

Both regions; per environment and region an Auto Scaling group with a launch template and a
target group behind a load balancer (production: c5.xlarge, 4-10 instances in us-east-1, a
2-instance standby in us-west-2); the hosted zone ``example.com`` with the DNS layout the
runbooks expect (``api.example.com`` → CNAME ``api-production.example.com``, whose weighted
records ``us-east-1`` (100) and ``us-west-2`` (0) point at each region's load balancer), the
backup buckets, the bot's secrets and one standalone instance (a reporting server) per
environment that ``maintenance.resize --instance`` can resize.

Test credentials only; ``AWS_ENDPOINT_URL`` points boto3 and the AWS CLI at the server.
"""

from __future__ import annotations

import io
import json
import logging
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from sandbox.slack import SANDBOX_BOT_TOKEN, SANDBOX_SIGNING_SECRET

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
AMI = "ami-12c6146b"  # an image id moto knows


@dataclass(frozen=True)
class GroupSeed:
    environment: str
    region: str
    name: str
    instance_type: str
    minimum: int
    maximum: int
    desired: int


GROUPS = [
    GroupSeed("production", "us-east-1", "prod-api-use1", "c5.xlarge", 4, 10, 4),
    GroupSeed("production", "us-west-2", "prod-api-usw2", "c5.xlarge", 2, 10, 2),
    GroupSeed("staging", "us-east-1", "staging-api-use1", "t3.medium", 2, 4, 2),
    GroupSeed("rehearsal", "us-east-1", "rehearsal-api-use1", "t3.medium", 2, 4, 2),
    GroupSeed("rehearsal", "us-west-2", "rehearsal-api-usw2", "t3.medium", 1, 4, 1),
]
#: Instances outside any group (environment, region, Name tag, type): a reporting server each.
STANDALONE = [
    ("production", "us-east-1", "prod-reports-use1", "c5.xlarge"),
    ("staging", "us-east-1", "staging-reports-use1", "t3.medium"),
]
ZONE = "example.com."
PUBLIC_RECORD = "api.example.com."
TRAFFIC_RECORD = "api-production.example.com."
#: environment -> (public record, weighted traffic record): 100 % us-east-1, 0 % us-west-2
TRAFFIC = {
    "production": (PUBLIC_RECORD, TRAFFIC_RECORD),
    "rehearsal": ("api.rehearsal.example.com.", "api-rehearsal.example.com."),
}
BUCKETS = {
    "app-backups": "us-east-1",
    "app-backups-usw2": "us-west-2",
    "staging-app-backups": "us-east-1",
}


#: Operations that only read (query and JSON protocols name the operation).
READ_OPERATION = re.compile(r"^(Describe|List|Get|Head)")


#: The service a request is signed for: SigV4's credential scope (key/date/region/service/...).
SIGNED_SERVICE = re.compile(r"Credential=[^/]*/[^/]*/[^/]*/([^/]+)/")


class _Recorder:
    """WSGI middleware recording each request's method, path, operation (the query
    protocol's ``Action``, the JSON protocol's ``X-Amz-Target``) and the service it was signed
    for; the body is put back."""

    def __init__(self, app: Any, calls: list[tuple[str, str, str, str]]) -> None:
        self.app, self.calls = app, calls

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size) if size else b""
        environ["wsgi.input"] = io.BytesIO(body)
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        form = urllib.parse.parse_qs(body.decode("latin-1")) if b"Action=" in body[:200] else {}
        target = str(environ.get("HTTP_X_AMZ_TARGET") or "").rpartition(".")[2]
        action = (form.get("Action") or query.get("Action") or [target])[0]
        signed = SIGNED_SERVICE.search(str(environ.get("HTTP_AUTHORIZATION") or ""))
        self.calls.append(
            (
                str(environ.get("REQUEST_METHOD")),
                str(environ.get("PATH_INFO")),
                action,
                signed.group(1) if signed else "",
            )
        )
        return self.app(environ, start_response)


class AwsSandbox:
    """A moto server on 127.0.0.1 (a free port unless given)."""

    def __init__(self, port: int = 0) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.url = ""
        #: Every AWS API call served: (HTTP method, path, operation, signed service)
        #: (``writes()``).
        self.calls: list[tuple[str, str, str, str]] = []
        self._clients: dict[tuple[str, str], Any] = {}
        #: (environment, region) -> the DNS name of its load balancer, from the last seed.
        self._balancers: dict[tuple[str, str], str] = {}

    def writes(self, since: int = 0) -> list[tuple[str, str, str, str]]:
        """The write log: calls from ``calls[since:]`` that may change state (not a
        Describe/List/Get operation, not an S3 GET or HEAD, not moto's own API)."""
        return [
            call
            for call in self.calls[since:]
            if not call[1].startswith("/moto-api")
            and call[0] not in ("GET", "HEAD")
            and not READ_OPERATION.match(call[2])
        ]

    def start(self) -> AwsSandbox:
        self.server.start()
        wsgi = self.server._server  # moto keeps its WSGI server private: wrap its app
        assert wsgi is not None
        wsgi.app = _Recorder(wsgi.app, self.calls)
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.stop()

    def client(self, service: str, region: str = "us-east-1") -> Any:
        """A boto3 client of the server, made once per (service, region): making one costs
        ~50 ms, and botocore's clients are safe to share between threads."""
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = boto3.client(
                service,
                region_name=region,
                endpoint_url=self.url,
                aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            )
        return self._clients[key]

    def reset(self) -> None:
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST")  # noqa: S310
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - the local server

    def reseed(self, since: int) -> bool:
        """Put the seeded state back after the calls from ``calls[since:]``; return whether
        anything had to be put back. Only the services written to are reset and seeded again
        where they stand alone (S3, Secrets Manager, Route 53, whose records name the
        balancers of the last seed); a write to EC2, ELB or Auto Scaling (which launch and
        name each other's resources) resets everything. Reset and seed of everything cost
        0.6-1.6 s; the buckets alone a tenth of that."""
        from moto.backends import get_backend

        written = {call[3] for call in self.writes(since)}
        if not written:
            return False
        alone = {"s3": self._seed_buckets, "secretsmanager": self._seed_secrets,
                 "route53": self._seed_dns}  # fmt: skip
        if not self._balancers or not written <= set(alone):
            self.reset()
            self.seed()
            return True
        for service in sorted(written):
            # Per account: ``BackendDict.reset`` is a class method that resets every service.
            for account in get_backend(service).values():  # type: ignore[call-overload]
                account.reset()
            alone[service]()
        return True

    def seed(self) -> AwsSandbox:
        self._balancers = {}
        for group in GROUPS:
            self._balancers[group.environment, group.region] = self._group(group)
        self._seed_instances()
        self._seed_dns()
        self._seed_buckets()
        self._seed_secrets()
        return self

    def _seed_instances(self) -> None:
        for environment, region, name, instance_type in STANDALONE:
            self.client("ec2", region).run_instances(
                ImageId=AMI,
                InstanceType=instance_type,
                MinCount=1,
                MaxCount=1,
                TagSpecifications=[
                    {
                        "ResourceType": "instance",
                        "Tags": [
                            {"Key": "Name", "Value": name},
                            {"Key": "environment", "Value": environment},
                        ],
                    }
                ],
            )

    def _seed_dns(self) -> None:
        balancers = self._balancers
        route53 = self.client("route53")
        zone_id = route53.create_hosted_zone(Name=ZONE, CallerReference="sandbox-example-com")[
            "HostedZone"
        ]["Id"]
        changes: list[dict[str, Any]] = []
        for environment, (public, traffic) in TRAFFIC.items():
            changes.append(
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": public,
                        "Type": "CNAME",
                        "TTL": 60,
                        "ResourceRecords": [{"Value": traffic}],
                    },
                }
            )
            for region, weight in (("us-east-1", 100), ("us-west-2", 0)):
                changes.append(
                    {
                        "Action": "CREATE",
                        "ResourceRecordSet": {
                            "Name": traffic,
                            "Type": "CNAME",
                            "TTL": 60,
                            "SetIdentifier": region,
                            "Weight": weight,
                            "ResourceRecords": [{"Value": balancers[environment, region]}],
                        },
                    }
                )
        route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})
        for region in ("us-east-1", "us-west-2"):  # what automatic failover would watch
            route53.create_health_check(
                CallerReference=f"sandbox-api-{region}",
                HealthCheckConfig={
                    "Type": "HTTPS",
                    "FullyQualifiedDomainName": f"api-{region}.example.com",
                    "ResourcePath": "/health",
                    "Port": 443,
                },
            )

    def _seed_buckets(self) -> None:
        for bucket, region in BUCKETS.items():
            s3 = self.client("s3", region)
            if region == "us-east-1":
                s3.create_bucket(Bucket=bucket)
            else:
                s3.create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
                )
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            if bucket == "app-backups":
                s3.put_object(
                    Bucket=bucket,
                    Key="mongodb/production/snapshot-latest.archive",
                    Body=b"sandbox snapshot",
                )

    def _seed_secrets(self) -> None:
        secrets = self.client("secretsmanager")
        secrets.create_secret(
            Name="runbook-bot/audit-key", SecretString="sandbox-audit-key-0123456789"
        )
        secrets.create_secret(
            Name="runbook-bot/slack",
            SecretString=json.dumps(
                {"bot_token": SANDBOX_BOT_TOKEN, "signing_secret": SANDBOX_SIGNING_SECRET}
            ),
        )

    def _group(self, group: GroupSeed) -> str:
        ec2 = self.client("ec2", group.region)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(
                VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{group.region}{z}"
            )["Subnet"]["SubnetId"]
            for i, z in enumerate("ab")
        ]
        ec2.create_launch_template(
            LaunchTemplateName=f"{group.name}-lt",
            LaunchTemplateData={"ImageId": AMI, "InstanceType": group.instance_type},
        )
        elb = self.client("elbv2", group.region)
        balancer = elb.create_load_balancer(Name=f"{group.name}-lb", Subnets=subnets)[
            "LoadBalancers"
        ][0]
        target_group = elb.create_target_group(
            Name=f"{group.name}-tg", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance"
        )["TargetGroups"][0]["TargetGroupArn"]
        self.client("autoscaling", group.region).create_auto_scaling_group(
            AutoScalingGroupName=group.name,
            LaunchTemplate={"LaunchTemplateName": f"{group.name}-lt", "Version": "$Latest"},
            MinSize=group.minimum,
            MaxSize=group.maximum,
            DesiredCapacity=group.desired,
            VPCZoneIdentifier=",".join(subnets),
            TargetGroupARNs=[target_group],
            Tags=[
                {
                    "Key": "environment",
                    "Value": group.environment,
                    "PropagateAtLaunch": True,
                    "ResourceId": group.name,
                    "ResourceType": "auto-scaling-group",
                }
            ],
        )
        return str(balancer["DNSName"])
