"""The runbook registry: one dotted name per runbook, used by every front end.

Runbook modules define ``RunbookSpec`` objects with the ``@runbook`` decorator (no global
registration at import); ``load_registry`` collects them from the modules it is given
(``runbooks.catalog`` lists the product's; the engine names none). Tests
build their own ``Registry`` from the specs they need.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from runbooks.engine.errors import NotFound
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import PlanContext, PlanDraft, Step
from runbooks.engine.readiness import PSEUDO_RUNBOOKS, ReadinessCheck

P = TypeVar("P", bound=RunbookParams)
Planner = Callable[[PlanContext, P], "PlanDraft | list[Step]"]

_NAME = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)?$")


@dataclass(frozen=True)
class RunbookSpec(Generic[P]):
    """A runbook: name, parameter model, planner, lock key template and help text."""

    name: str
    params: type[P]
    planner: Planner[P]
    lock: str | tuple[str, ...] | None
    read_only: bool
    doc: str

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else self.name

    @property
    def namespace(self) -> str | None:
        return self.name.split(".", 1)[0] if "." in self.name else None

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[-1]

    def lock_keys(self, params: RunbookParams) -> list[str]:
        """The resources this request touches, as lock keys (``ENV:*``: the whole environment)."""
        if self.read_only or self.lock is None:
            return []
        templates = (self.lock,) if isinstance(self.lock, str) else self.lock
        values = params.model_dump()
        return sorted({template.format(**values) for template in templates})

    def lock_key(self, params: RunbookParams) -> str | None:
        return ", ".join(self.lock_keys(params)) or None

    def make_plan(self, ctx: PlanContext) -> PlanDraft:
        result = self.planner(ctx, ctx.params)  # type: ignore[arg-type]
        return result if isinstance(result, PlanDraft) else PlanDraft(steps=list(result))


def runbook(
    name: str,
    *,
    params: type[P],
    lock: str | tuple[str, ...] | None = None,
    read_only: bool = False,
) -> Callable[[Planner[P]], RunbookSpec[P]]:
    """Declare a runbook from its planner function; the docstring is the help text.

    Example::

        @runbook("scale.pods", params=ScalePodsParams, lock="{environment}:scale")
        def scale_pods(ctx: PlanContext, params: ScalePodsParams) -> list[Step]:
            \"\"\"Scale a deployment to a fixed replica count.\"\"\"
    """
    if not _NAME.match(name):
        raise ValueError(f"runbook name {name!r} must be 'name' or 'namespace.name' (a-z, 0-9, -)")

    def decorate(planner: Planner[P]) -> RunbookSpec[P]:
        return RunbookSpec(
            name=name,
            params=params,
            planner=planner,
            lock=lock,
            read_only=read_only,
            doc=inspect.getdoc(planner) or "",
        )

    return decorate


class Registry:
    """An explicit, replaceable collection of runbooks."""

    def __init__(
        self, specs: Iterable[RunbookSpec[Any]] = (), checks: Iterable[ReadinessCheck] = ()
    ) -> None:
        self._specs: dict[str, RunbookSpec[Any]] = {}
        #: Readiness checks declared beside the runbooks (``@readiness_check``).
        self.checks: list[ReadinessCheck] = list(checks)
        for spec in specs:
            self.add(spec)

    def add(self, spec: RunbookSpec[Any]) -> None:
        if spec.name in self._specs:
            raise ValueError(f"runbook {spec.name!r} is registered twice")
        self._specs[spec.name] = spec

    def get(self, name: str) -> RunbookSpec[Any]:
        try:
            return self._specs[name]
        except KeyError:
            raise NotFound(
                f"unknown runbook {name!r}; known: {', '.join(sorted(self._specs)) or 'none'}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __iter__(self) -> Iterator[RunbookSpec[Any]]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)


def specs_in_module(module_name: str) -> list[RunbookSpec[Any]]:
    module = importlib.import_module(module_name)
    return [value for value in vars(module).values() if isinstance(value, RunbookSpec)]


def load_registry(modules: Iterable[str]) -> Registry:
    """Import the runbook modules and collect their specs and readiness checks."""
    registry = Registry()
    for module_name in modules:
        for spec in specs_in_module(module_name):
            registry.add(spec)
        module = importlib.import_module(module_name)
        registry.checks += [v for v in vars(module).values() if isinstance(v, ReadinessCheck)]
    for check in registry.checks:
        if check.runbook not in PSEUDO_RUNBOOKS:
            registry.get(check.runbook)  # a check of a runbook that does not exist is a bug
    return registry
