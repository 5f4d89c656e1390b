"""``maintenance.resources``: the Kubernetes side of the spec's vertical scaling, a service's
container requests/limits inside a window. One strategic-merge patch of the container's
``resources`` per region (the change-cause annotation says what changed, so
``rollback.history`` shows it), then the rollout watched to completion like ``kubectl rollout
status``. Compensation patches the previous values back (keys that did not exist are removed)
and waits for that rollout too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from runbooks.engine.clock import format_duration, iso
from runbooks.engine.errors import InvalidInput
from runbooks.engine.params import RegionalParams
from runbooks.engine.plan import PlanContext, PlanDraft, RunContext, Step
from runbooks.engine.registry import runbook
from runbooks.interfaces import InfrastructureError
from runbooks.kit.gitops import owned_warning
from runbooks.kit.kube import KubeStep, kube_for, rollout_regions, service_config
from runbooks.kit.windows import window_notes

#: A rollout must be able to finish before the window closes.
ROLLOUT_MARGIN_S = 300.0

Resources = dict[str, dict[str, str]]

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def cpu_cores(text: str) -> float:
    match = _CPU.match(text)
    if match is None:
        raise ValueError(text)
    value = float(match.group(1))
    return value / 1000 if match.group(2) else value


def memory_bytes(text: str) -> float:
    match = _MEMORY.match(text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2)]


_PARSERS = {"cpu": (cpu_cores, "500m or 2"), "memory": (memory_bytes, "512Mi or 2Gi")}


class ResourcesParams(RegionalParams):
    region: str | None = Field(None, description="region (default: every region with a cluster)")
    service: str = Field(description="service whose containers to resize (e.g. api)")
    cpu_request: str | None = Field(None, description="CPU request, e.g. 500m or 1")
    cpu_limit: str | None = Field(None, description="CPU limit, e.g. 2000m or 2")
    memory_request: str | None = Field(None, description="memory request, e.g. 512Mi")
    memory_limit: str | None = Field(None, description="memory limit, e.g. 2Gi")
    container: str | None = Field(None, description="container name (default: the only one)")
    window: str | None = Field(
        None,
        description="maintenance window: a name from schedules.yaml, or START/DURATION; "
        "default: the one open now",
    )


def _text(resources: Resources) -> str:
    parts = []
    for kind in ("requests", "limits"):
        values = resources.get(kind) or {}
        shown = ", ".join(f"{k} {values[k]}" for k in sorted(values))
        parts.append(f"{kind} {shown or 'none'}")
    return "; ".join(parts)


@dataclass(frozen=True, kw_only=True)
class SetResources(KubeStep, kind="kube.resources"):
    deployment: str
    container: str
    from_resources: Resources
    to_resources: Resources
    window_end: float | None
    timeout: float = 600.0

    def describe(self) -> str:
        until = ""
        if self.window_end is not None:
            until = f", not starting after {iso(self.window_end - ROLLOUT_MARGIN_S)}"
        return (
            f"set {self.deployment}/{self.container} in {self.environment} ({self.region}): "
            f"{_text(self.from_resources)} → {_text(self.to_resources)}, and wait for the "
            f"rollout{until}"
        )

    def _current(self, ctx: RunContext) -> tuple[Resources, bool]:
        state = self.kube(ctx).deployment(self.namespace, self.deployment)
        for container in state.template.get("spec", {}).get("containers", []):
            if container.get("name") == self.container:
                resources = container.get("resources") or {}
                return {k: dict(resources.get(k) or {}) for k in ("requests", "limits")}, (
                    state.updated == state.replicas == state.ready
                    and state.observed_generation >= state.generation
                )
        raise InfrastructureError(
            f"{self.deployment} in {self.region} has no container {self.container}"
        )

    def _apply(self, ctx: RunContext, want: Resources, cause: str) -> bool:
        current, _ = self._current(ctx)
        changed = False
        if not _same(current, want):
            patch: dict[str, dict[str, str | None]] = {}
            for kind in ("requests", "limits"):
                keys = set(current.get(kind, {})) | set(want.get(kind, {}))
                patch[kind] = {key: want.get(kind, {}).get(key) for key in sorted(keys)}
            self.kube(ctx).set_container_resources(
                self.namespace, self.deployment, self.container, patch, cause=cause
            )
            changed = True
        self.kube(ctx).wait_rollout(
            self.namespace, self.deployment, timeout=self.timeout, check=ctx.check_cancelled
        )
        return changed

    def run(self, ctx: RunContext) -> str | None:
        current, _ = self._current(ctx)
        end = self.window_end
        changing = not _same(current, self.to_resources)
        if changing and end is not None and ctx.clock.now() + ROLLOUT_MARGIN_S > end:
            raise InfrastructureError(
                f"the maintenance window ends at {iso(end)}: less than "
                f"{format_duration(ROLLOUT_MARGIN_S)} left for a rollout; not starting"
            )
        cause = f"runbook-bot maintenance.resources: {_text(self.to_resources)}"
        if not self._apply(ctx, self.to_resources, cause):
            return f"{self.deployment} already had these resources"
        return f"{self.deployment} rolled out with {_text(self.to_resources)}"

    def verify(self, ctx: RunContext) -> bool:
        current, rolled_out = self._current(ctx)
        return _same(current, self.to_resources) and rolled_out

    def undo(self, ctx: RunContext) -> str | None:
        cause = f"runbook-bot maintenance.resources (undo): {_text(self.from_resources)}"
        self._apply(ctx, self.from_resources, cause)
        return f"{self.deployment} back to {_text(self.from_resources)}"


def _normal(resources: Resources) -> dict[str, dict[str, object]]:
    """Compared by amount: the API server may write 2000m back as 2."""
    normal: dict[str, dict[str, object]] = {}
    for kind in ("requests", "limits"):
        values: dict[str, object] = {}
        for name, value in (resources.get(kind) or {}).items():
            parse = _PARSERS.get(name, (None, ""))[0]
            try:
                values[name] = parse(value) if parse else value
            except ValueError:
                values[name] = value
        normal[kind] = values
    return normal


def _same(a: Resources, b: Resources) -> bool:
    return _normal(a) == _normal(b)


def _wanted(params: ResourcesParams) -> dict[tuple[str, str], str]:
    wanted: dict[tuple[str, str], str] = {}
    for kind, name, value in (
        ("requests", "cpu", params.cpu_request),
        ("limits", "cpu", params.cpu_limit),
        ("requests", "memory", params.memory_request),
        ("limits", "memory", params.memory_limit),
    ):
        if value is None:
            continue
        parse, example = _PARSERS[name]
        try:
            amount = parse(value)
        except ValueError:
            flag = f"--{name}-{kind[:-1]}"
            raise InvalidInput(
                f"{flag} {value!r}: not a Kubernetes quantity; expected e.g. {example}"
            ) from None
        if amount <= 0:
            raise InvalidInput(f"--{name}-{kind[:-1]} {value!r}: must be more than 0")
        wanted[kind, name] = value
    if not wanted:
        raise InvalidInput(
            "nothing to change: give at least one of --cpu-request, --cpu-limit, "
            "--memory-request, --memory-limit"
        )
    return wanted


def _check_request_within_limit(resources: Resources, where: str) -> None:
    for name, (parse, _) in _PARSERS.items():
        request = resources.get("requests", {}).get(name)
        limit = resources.get("limits", {}).get(name)
        if request is not None and limit is not None and parse(request) > parse(limit):
            raise InvalidInput(
                f"{where}: {name} request {request} would exceed its limit {limit}; "
                f"Kubernetes refuses that. Raise --{name}-limit too, or ask for less"
            )


@runbook("maintenance.resources", params=ResourcesParams, lock="{environment}:{service}")
def resources(ctx: PlanContext, params: ResourcesParams) -> PlanDraft:
    """Change a service's container requests/limits inside a maintenance window."""
    env = ctx.env
    service = service_config(env, params.environment, params.service)
    wanted = _wanted(params)
    window_end, notes = window_notes(ctx, params)
    steps: list[Step] = []
    for region in rollout_regions(env, params.region):
        kube = kube_for(ctx, params.environment, region)
        state = kube.deployment(service.namespace, service.deployment)
        owned = owned_warning(
            kube, service.namespace, service.deployment, change="resources change"
        )
        if owned is not None:
            notes.append(f"{region}: {owned}")
        containers: list[dict[str, Any]] = state.template.get("spec", {}).get("containers", [])
        names = [c.get("name", "") for c in containers]
        if params.container is None and len(names) != 1:
            raise InvalidInput(
                f"{service.deployment} has containers {', '.join(names)}: say which with "
                "--container"
            )
        name = params.container or names[0]
        if name not in names:
            raise InvalidInput(
                f"--container {name!r}: {service.deployment} in {region} has {', '.join(names)}"
            )
        container = containers[names.index(name)]
        current_raw = container.get("resources") or {}
        current: Resources = {
            k: {kk: str(vv) for kk, vv in (current_raw.get(k) or {}).items()}
            for k in ("requests", "limits")
        }
        target: Resources = {k: dict(v) for k, v in current.items()}
        for (kind, resource), value in wanted.items():
            target[kind][resource] = value
        _check_request_within_limit(target, f"{service.deployment} in {region}")
        if _same(current, target):
            notes.append(f"{service.deployment} in {region} already has {_text(target)}")
            continue
        notes.append(
            f"{service.deployment} in {region}: {state.replicas} pods are replaced (a rolling "
            "update, as for a new image)"
        )
        steps.append(
            SetResources(
                environment=params.environment,
                region=region,
                namespace=service.namespace,
                deployment=service.deployment,
                container=name,
                from_resources=current,
                to_resources=target,
                window_end=window_end,
            )
        )
    return PlanDraft(
        steps=steps,
        summary=f"resources of {params.service} in {params.environment}",
        notes=notes,
    )
