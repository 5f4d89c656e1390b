"""``config/environments.yaml``'s schema: environments, their regions, services, targets,
scaling limits, database, Prometheus gate, Route53, PagerDuty and GitOps settings.

Errors name the file, the key path and what is allowed (``loader.load_config``). Unknown keys
are errors. Secrets are never read from this file: it names environment variables instead
(``*_env`` keys).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from runbooks.engine.clock import format_duration
from runbooks.engine.config.yaml_files import Seconds

Tier = Literal["sandbox", "staging", "production"]
REGION_NAMES = ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceConfig(Strict):
    """One service the runbooks operate (a Kubernetes deployment)."""

    deployment: str
    namespace: str
    strategy: Literal["rolling", "blue-green"] = "rolling"
    container: str | None = None
    port: int = 3000
    health_path: str = "/health"
    ready_path: str = "/ready"
    hpa: str | None = None
    #: Blue-green only: the Kubernetes Service that points at one colour, and each colour's
    #: deployment; the Service's selector label ``color_label`` names the live colour.
    service: str | None = None
    colors: dict[str, str] = Field(default_factory=dict)
    color_label: str = "color"

    @model_validator(mode="after")
    def _blue_green(self) -> ServiceConfig:
        if self.strategy == "blue-green" and (len(self.colors) < 2 or not self.service):
            raise ValueError(
                "a blue-green service needs `service` (the Kubernetes Service) "
                "and at least two `colors` (colour: deployment)"
            )
        return self


class ScalingLimits(Strict):
    """Policy bounds for replicas (the spec: 2-20 instances)."""

    min_replicas: int = Field(2, ge=0)
    max_replicas: int = Field(20, ge=1)
    scale_up_cooldown: Seconds = 180.0
    scale_down_cooldown: Seconds = 600.0

    @model_validator(mode="after")
    def _ordered(self) -> ScalingLimits:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas "
                f"({self.max_replicas})"
            )
        return self


class Target(Strict):
    """A recovery objective: RTO and RPO in seconds."""

    rto: Seconds
    rpo: Seconds


class RollbackTriggers(Strict):
    """Automatic rollback thresholds from the spec."""

    error_rate: float = Field(0.05, gt=0, le=1)
    p95_ms: float = Field(1000, gt=0)
    failing_health_checks: int = Field(3, ge=1)


class PagerDutyService(Strict):
    """A PagerDuty service of an environment: which of our services it pages for, and the
    runbooks an incident on it suggests (Run buttons on the incident card)."""

    service: str | None = None
    suggest: list[str] = Field(default_factory=list)


class PagerDutyEnvironment(Strict):
    #: Where the incident cards go (default: the environment's approvals channel).
    channel: str | None = None
    #: PagerDuty service id → what it is here.
    services: dict[str, PagerDutyService] = Field(default_factory=dict)


class Route53Config(Strict):
    """The DNS layout: ``record`` (the public name) aliases ``traffic_record``, whose weighted
    records (one per region, the region as set identifier) carry the traffic split."""

    zone: str
    record: str
    traffic_record: str


class MongoConfig(Strict):
    """Where the database is; the URI itself (with credentials) comes from ``uri_env``."""

    uri_env: str
    kind: Literal["atlas", "replica-set"] = "atlas"
    #: Our region name -> the value of the members' ``region`` tag (Atlas: US_EAST_1).
    region_tags: dict[str, str] = Field(default_factory=dict)
    #: Atlas only: where the Admin API finds the cluster (keys come from ATLAS_PUBLIC_KEY /
    #: ATLAS_PRIVATE_KEY, the base URL from ATLAS_API_URL, default cloud.mongodb.com).
    atlas_project: str | None = None
    atlas_cluster: str | None = None
    #: How long any one database call may take (connect, server selection, each reply).
    timeout: Seconds = 10.0
    #: The application's database (what ``restore.backup`` dumps).
    database: str = "app"
    #: Where restore tests find backups: ``dump`` (restore.backup's dumps in backup_bucket)
    #: or ``atlas`` (the cluster's cloud backup snapshots, restored by an Atlas restore job).
    backups: Literal["dump", "atlas"] = "dump"
    #: The backup policy: how often a backup is taken (nightly dumps: 24h). A restore test's
    #: RPO target is this interval (the data a restore of the last backup can lose), not the
    #: failover's RPO in ``targets.database``.
    backup_interval: Seconds = Field(86400.0, gt=0)
    #: A document field holding its last-change time: the newest value is a backup's
    #: consistency point (RPO). None: the backup's start time is used.
    timestamp_field: str | None = None


class SmokeQuery(Strict):
    """A query a restored copy must answer as declared (``count`` exactly, or ``at_least``)."""

    collection: str
    filter: dict[str, Any] = Field(default_factory=dict)
    count: int | None = Field(None, ge=0)
    at_least: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_expectation(self) -> SmokeQuery:
        if (self.count is None) == (self.at_least is None):
            raise ValueError(
                f"smoke query on {self.collection!r} needs exactly one of count or at_least"
            )
        return self

    def expectation(self) -> str:
        return f"= {self.count}" if self.count is not None else f">= {self.at_least}"


class RestoreConfig(Strict):
    """Where restore tests restore to: never the source database or cluster."""

    #: Environment variable with the restore target's connection string (a secret).
    target_uri_env: str
    #: Scratch databases are named ``<prefix><environment>_<time>``; only these are dropped.
    scratch_prefix: str = "restore_test_"
    smoke_queries: list[SmokeQuery] = Field(default_factory=list)
    #: Atlas cloud backups: the cluster (same project) restore jobs restore into. An Atlas
    #: restore wipes its target, so it must carry the tag ``runbook-bot: scratch``.
    atlas_target_cluster: str | None = None


#: The labels that pick one environment's series (the spec's exporters label every series
#: with its environment, region and service): label name -> value, where ``{environment}``,
#: ``{region}`` and ``{service}`` are replaced. A query says ``{selector}`` for them.
DEFAULT_LABELS = {"environment": "{environment}", "region": "{region}", "service": "{service}"}

#: The 5xx share of one region's requests in one environment (DR verification and soaks).
#: ``or vector(0)``: while no 5xx series exists the share is 0, not "no data"; without any
#: request series the division is empty (no data), without traffic it is NaN (no data).
DEFAULT_ERROR_RATE_QUERY = (
    '(sum(rate(http_requests_total{{selector},code=~"5.."}[5m])) or vector(0)) / '
    "sum(rate(http_requests_total{{selector}}[5m]))"
)

#: The rollback gate's queries read only what was served since the rollback finished:
#: ``{window}`` is the time since then (whole seconds, at least the gate's ``min_window``).
DEFAULT_SERVICE_ERROR_RATE_QUERY = (
    '(sum(rate(http_requests_total{{selector},code=~"5.."}[{window}])) or vector(0)) / '
    "sum(rate(http_requests_total{{selector}}[{window}]))"
)
DEFAULT_LATENCY_P95_QUERY = (
    "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket"
    "{{selector}}[{window}])))"
)
#: Failing probes now; ``last_over_time`` over the window: a probe that stopped reporting
#: before the rollback finished is no data, not its last pre-rollback answer.
DEFAULT_HEALTH_FAILURES_QUERY = "sum(1 - last_over_time(probe_success{{selector}}[{window}]))"


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class PrometheusConfig(Strict):
    """Where the service's signals are read (Prometheus HTTP API, instant queries)."""

    #: Base URL (``${VAR}`` expanded), e.g. http://prometheus.monitoring:9090
    url: str
    #: The label matchers that scope every query to this environment (``{selector}``).
    labels: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_LABELS))
    #: PromQL giving the 5xx share of one region's requests (0..1); ``{selector}`` (the
    #: labels without those whose value names ``{service}``), ``{environment}`` and
    #: ``{region}`` are replaced.
    error_rate_query: str = DEFAULT_ERROR_RATE_QUERY
    #: The rollback gate's queries: ``{selector}``, ``{environment}``, ``{region}``,
    #: ``{service}`` and ``{window}`` (the time since the rollback finished) are replaced.
    #: The 5xx share of one service's requests (0..1).
    service_error_rate_query: str = DEFAULT_SERVICE_ERROR_RATE_QUERY
    #: The 95th percentile response time, in seconds.
    latency_p95_query: str = DEFAULT_LATENCY_P95_QUERY
    #: How many of the service's health probes fail now (0 when all pass).
    health_failures_query: str = DEFAULT_HEALTH_FAILURES_QUERY

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
                raise ValueError(f"{name!r} is not a Prometheus label name")
        if not labels:
            raise ValueError("labels must scope the queries to the environment (at least one)")
        return labels

    @model_validator(mode="after")
    def _windowed(self) -> PrometheusConfig:
        for name in ("service_error_rate_query", "latency_p95_query"):
            if "{window}" not in getattr(self, name):
                raise ValueError(
                    f"{name} must read its rates over {{window}} (the time since the rollback "
                    "finished): a fixed window after a rollout measures the release before it"
                )
        return self

    def render(
        self,
        query: str,
        *,
        environment: str,
        region: str,
        service: str | None = None,
        window: float | None = None,
    ) -> str:
        """``query`` with its placeholders replaced; without a service the labels whose value
        names ``{service}`` are left out of ``{selector}``."""
        values = {"{environment}": environment, "{region}": region}
        if service is not None:
            values["{service}"] = service

        def fill(text: str) -> str:
            for placeholder, value in values.items():
                text = text.replace(placeholder, value)
            return text

        selector = ",".join(
            f"{name}={_promql_string(fill(value))}"
            for name, value in self.labels.items()
            if service is not None or "{service}" not in value
        )
        text = fill(query.replace("{selector}", selector))
        if window is not None:
            text = text.replace("{window}", f"{max(1, int(window))}s")
        return text


class RollbackGate(Strict):
    """After a rollback, watch the trigger signals (error rate, p95, failing health checks)
    in Prometheus for ``settle``: healthy means every sample below the triggers. No data, an
    error or NaN is never healthy: the run fails "unverified" (and keeps the rollback), or
    asks, as ``unverified`` says."""

    #: How long after the rollback finished the signals must be healthy.
    settle: Seconds = 300.0
    #: Seconds between samples.
    interval: Seconds = 15.0
    #: The first sample is taken this long after the rollback finished, over that window: a
    #: rate needs two scrapes in its window, so at least twice Prometheus's scrape interval
    #: (the spec's 15 s: 30 s; the default leaves room for a missed scrape).
    min_window: Seconds = 60.0
    #: When the signals cannot be read (no data, NaN, a Prometheus error): ``fail`` (the step
    #: fails "unverified") or ``ask`` (the run asks its requester and operators, healthy or
    #: failed, with ``runs.answer`` or the card's buttons; no answer within ``answer_within``
    #: fails). Either way the rollback stays done.
    unverified: Literal["fail", "ask"] = "fail"
    answer_within: Seconds = 900.0

    @model_validator(mode="after")
    def _interval_fits(self) -> RollbackGate:
        if not 0 < self.interval <= self.settle:
            raise ValueError(
                f"interval {format_duration(self.interval)} must be above 0 and at most "
                f"settle {format_duration(self.settle)}"
            )
        if not 1 <= self.min_window <= self.settle:
            raise ValueError(
                f"min_window {format_duration(self.min_window)} must be at least 1s and at "
                f"most settle {format_duration(self.settle)}"
            )
        return self


_OWNER_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: GitHub's token prefixes (personal, OAuth, user-to-server, server-to-server, refresh, fine-
#: grained): a value like this in ``token_env`` is the secret pasted in the wrong place.
_TOKEN_SHAPE = re.compile(r"^(gh[pousr]_|github_pat_)\w{20,}")
_SECRET_REFERENCE = "aws-secretsmanager:"  # noqa: S105 - a scheme, not a secret


class PullRequestConfig(Strict):
    """Open a pull request for each revert branch through the hosting API (docs/gitops.md).

    Off unless ``gitops.pull_request`` is set. The token is never in this file: ``token_env``
    names the variable holding it (its value may be an ``aws-secretsmanager:`` reference), or
    is such a reference itself.
    """

    #: The hosting API: GitHub's REST API (``POST /repos/{owner}/{repo}/pulls``).
    api: Literal["github"] = "github"
    #: Its base URL (GitHub Enterprise Server: ``https://HOST/api/v3``); ``${VAR}`` expanded.
    api_url: str = "https://api.github.com"
    #: An application's Git URL, exactly as its Application or GitRepository names it, to the
    #: hosting API's ``owner/name`` of that repository. A revert pushed elsewhere opens none.
    repositories: dict[str, str] = Field(min_length=1)
    token_env: str
    #: Seconds each call to the API may take.
    timeout: Seconds = 10.0
    #: Where the pull request's body links the run: a URL with ``{run}`` (a log search, a
    #: dashboard); unset, the body names the run and ``runs.show``.
    run_link: str | None = None

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://", "${")):
            raise ValueError(f"{value!r} is not an http(s) URL (e.g. https://api.github.com)")
        return value

    @field_validator("repositories")
    @classmethod
    def _owner_names(cls, value: dict[str, str]) -> dict[str, str]:
        for url, name in value.items():
            if not _OWNER_NAME.match(name):
                raise ValueError(f"{url}: {name!r} is not owner/name (e.g. acme/deploy)")
        return value

    @field_validator("token_env")
    @classmethod
    def _token(cls, value: str) -> str:
        reference = value.startswith(_SECRET_REFERENCE) and len(value) > len(_SECRET_REFERENCE)
        if _TOKEN_SHAPE.match(value):
            raise ValueError(
                "this looks like a token itself: name the environment variable that holds it "
                f"(or an {_SECRET_REFERENCE} reference); tokens never go in this file"
            )
        if not (_VARIABLE.match(value) or reference):
            raise ValueError(
                "neither the name of an environment variable (e.g. "
                f"GITHUB_TOKEN) nor an {_SECRET_REFERENCE}<secret id>[#<json key>] reference; "
                "never the token itself (the value is not repeated here, in case it is one)"
            )
        return value

    @field_validator("run_link")
    @classmethod
    def _run_link(cls, value: str | None) -> str | None:
        if value is not None and "{run}" not in value:
            raise ValueError(f"{value!r} has no {{run}} (where the run's id goes)")
        return value


class GitOpsConfig(Strict):
    """Deployments owned by Argo CD or Flux (docs/gitops.md)."""

    #: How long a rollback may keep an application's automated sync suspended while Git
    #: still holds the rolled-back release; then it pages once and stays suspended.
    suspend_limit: Seconds = 86400.0
    #: The variable holding an HTTPS token for pushing revert branches (a value or an
    #: ``aws-secretsmanager:`` reference); unset: git's own access (SSH keys, a local path).
    token_env: str | None = None
    #: Open a pull request for each revert branch (off unless set).
    pull_request: PullRequestConfig | None = None


class EnvironmentConfig(Strict):
    """One environment of the spec (development, staging, production)."""

    tier: Tier
    description: str = ""
    regions: list[str] = Field(min_length=1)
    primary_region: str
    kube_contexts: dict[str, str] = Field(default_factory=dict)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    autoscaling_groups: dict[str, str] = Field(default_factory=dict)
    #: Instances outside any group that ``maintenance.resize --instance`` may resize, by their
    #: Name tag, per region.
    standalone_instances: dict[str, list[str]] = Field(default_factory=dict)
    instance_types: list[str] = Field(default_factory=list)
    route53: Route53Config | None = None
    mongodb: MongoConfig | None = None
    backup_bucket: str | None = None
    restore: RestoreConfig | None = None
    scaling: ScalingLimits = ScalingLimits()
    targets: dict[str, Target] = Field(default_factory=dict)
    #: The service's health URL per region: ``{region}`` is replaced, ``${VAR}`` expanded.
    health_url: str | None = None
    #: Error rate per region, checked by DR verification and partial-test soaks.
    prometheus: PrometheusConfig | None = None
    #: How long a partial failover test holds its traffic split.
    partial_soak: Seconds = 600.0
    rollback_triggers: RollbackTriggers = RollbackTriggers()
    #: Rollbacks end by watching the trigger signals in Prometheus (needs ``prometheus``).
    rollback_gate: RollbackGate | None = None
    #: PagerDuty services of this environment (incident cards, ``incident.list``).
    pagerduty: PagerDutyEnvironment | None = None
    gitops: GitOpsConfig = GitOpsConfig()

    @model_validator(mode="after")
    def _regions_consistent(self) -> EnvironmentConfig:
        for region in self.regions:
            if region not in REGION_NAMES:
                raise ValueError(f"unknown region {region!r}; known: {', '.join(REGION_NAMES)}")
        if self.rollback_gate is not None and self.prometheus is None:
            raise ValueError(
                "rollback_gate needs prometheus: {url: ...} to read the trigger signals from"
            )
        if self.primary_region not in self.regions:
            raise ValueError(
                f"primary_region {self.primary_region!r} is not one of regions "
                f"({', '.join(self.regions)})"
            )
        if self.mongodb is not None and self.mongodb.backups == "atlas":
            if self.restore is None or not self.restore.atlas_target_cluster:
                raise ValueError(
                    "mongodb.backups is atlas: restore.atlas_target_cluster must name the "
                    "scratch cluster Atlas restore jobs restore into"
                )
            if self.restore.atlas_target_cluster == self.mongodb.atlas_cluster:
                raise ValueError(
                    "restore.atlas_target_cluster is the source cluster: an Atlas restore "
                    "wipes its target"
                )
        for mapping_name in ("kube_contexts", "autoscaling_groups", "standalone_instances"):
            for region in getattr(self, mapping_name):
                if region not in self.regions:
                    raise ValueError(
                        f"{mapping_name} names region {region!r}, which is not one of this "
                        f"environment's regions ({', '.join(self.regions)})"
                    )
        return self


class EnvironmentsFile(Strict):
    """``environments.yaml``."""

    installation: str
    sandbox: bool = False
    environments: dict[str, EnvironmentConfig] = Field(min_length=1)
