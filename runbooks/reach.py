"""Readiness checks no runbook owns: credentials and reach, per environment and region.

Every runbook of an environment fails the same way when the bot's AWS credentials expired, its
Kubernetes role lost a verb, the database cannot be reached, or the Slack or PagerDuty token
was revoked. These checks live here, once, rather than in each runbook module (which would
repeat them, or pick one owner arbitrarily): the catalog lists this module beside the runbook
modules and the engine runs its checks beside the runbooks' own, as the pseudo-runbook
``environment`` (``readiness.check --runbook environment``). Slack and PagerDuty belong to the
installation, not to an environment: checked once per evaluation, reported under ``*``.

Everything here only reads. A ``SelfSubjectAccessReview`` is a POST, but the API server keeps
no object: it answers whether the caller may do a verb, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from runbooks.engine.errors import RunbookError
from runbooks.engine.plan import PlanContext
from runbooks.engine.readiness import ENVIRONMENT_WIDE, Observation, observe, readiness_check
from runbooks.interfaces import IdentityOps, infrastructure

#: What the shipped Role grants (``deploy/kubernetes/base/role.yaml``; tests/test_deploy.py
#: checks the two agree): (API group, resource[/subresource], verb).
OPERATOR_ROLE: tuple[tuple[str, str, str], ...] = (
    ("apps", "deployments", "get"),
    ("apps", "deployments", "watch"),
    ("apps", "deployments", "patch"),
    ("apps", "deployments/scale", "patch"),
    ("apps", "replicasets", "list"),
    ("", "pods", "list"),
    ("", "endpoints", "get"),
    ("", "services", "get"),
    ("", "services", "update"),
    ("autoscaling", "horizontalpodautoscalers", "list"),
    ("autoscaling", "horizontalpodautoscalers", "patch"),
)


def _uses_aws(ctx: PlanContext) -> bool:
    env = ctx.env
    return bool(
        env.autoscaling_groups or env.route53 or env.backup_bucket or env.standalone_instances
    )


@readiness_check(ENVIRONMENT_WIDE, "AWS credentials")
def aws_credentials(ctx: PlanContext) -> Iterator[Observation]:
    """The bot's AWS credentials work in each region the environment uses
    (``sts get-caller-identity`` there): one finding naming every region that failed, since
    one set of credentials serves them all."""
    if not _uses_aws(ctx):
        return
    infra = infrastructure(ctx)
    acting: set[str] = set()
    failed: list[str] = []
    for region in ctx.env.regions:
        try:
            acting.add(infra.aws(region).caller_identity())
        except RunbookError as exc:
            failed.append(f"{region}: {(exc.message.splitlines() or [''])[0]}")
    regions = ", ".join(ctx.env.regions)
    if failed:
        yield "AWS", False, f"could not be checked: {'; '.join(failed)}"
    else:
        yield "AWS", True, f"acting as {', '.join(sorted(acting))} in {regions}"


@readiness_check(ENVIRONMENT_WIDE, "Kubernetes access")
def kubernetes_access(ctx: PlanContext) -> Iterator[Observation]:
    """Each region's Kubernetes context answers, and grants every verb of the shipped Role in
    every namespace the environment's services run in (one ``SelfSubjectAccessReview`` per
    verb)."""
    infra = infrastructure(ctx)
    namespaces = sorted({service.namespace for service in ctx.env.services.values()})
    for region in ctx.env.kube_contexts:
        for namespace in namespaces:

            def look(region: str = region, namespace: str = namespace) -> tuple[bool, str]:
                kube = infra.kube(ctx.environment, region)
                denied = []
                for group, resource, verb in OPERATOR_ROLE:
                    allowed, reason = kube.can_i(namespace, group, resource, verb)
                    if not allowed:
                        named = f"{verb} {resource}{'.' + group if group else ''}"
                        denied.append(f"{named}{f' ({reason})' if reason else ''}")
                if denied:
                    return False, (
                        f"the bot may not {'; '.join(denied)} in namespace {namespace}: the "
                        "runbooks that need it would fail (deploy/kubernetes/base/role.yaml "
                        "grants it; is the RoleBinding there?)"
                    )
                return True, f"all {len(OPERATOR_ROLE)} verbs of the Role allowed in {namespace}"

            yield observe(f"Kubernetes {region} {namespace}", look)


@readiness_check(ENVIRONMENT_WIDE, "database reachable")
def database_reachable(ctx: PlanContext) -> Iterator[Observation]:
    """The environment's MongoDB answers a ``ping``."""
    if ctx.env.mongodb is None:
        return
    infra = infrastructure(ctx)

    def look() -> tuple[bool, str]:
        infra.database(ctx.environment).ping()
        return True, "answers ping"

    yield observe("database", look)


def _identity(name: str, found: IdentityOps | None, off: str) -> Observation:
    if found is None:
        return name, True, f"{name} is off ({off}): nothing to check"
    try:
        return name, True, found.identity()
    except RunbookError as exc:  # the check ran: the token was refused (or unreachable)
        return name, False, (exc.message.splitlines() or [""])[0]


@readiness_check(ENVIRONMENT_WIDE, "Slack token", scope="installation")
def slack_token(ctx: PlanContext) -> Iterator[Observation]:
    """The bot's Slack token still works (``auth.test``): approvals, notices and drill
    announcements need it."""
    yield _identity("Slack", infrastructure(ctx).chat(), "SLACK_BOT_TOKEN is not set")


@readiness_check(ENVIRONMENT_WIDE, "PagerDuty token", scope="installation")
def pagerduty_token(ctx: PlanContext) -> Iterator[Observation]:
    """The PagerDuty REST token is valid (``GET /abilities``): incident notes and ``/incident``
    need it."""
    yield _identity("PagerDuty", infrastructure(ctx).paging(), "PAGERDUTY_API_TOKEN is not set")
