"""Build the invoke collection from the runbook registry plus the fixed task namespaces.

A runbook ``dr.failover`` becomes task ``failover`` in collection ``dr``; ``rollback`` becomes
a root task. Required parameters are positional (in declaration order) and may also be given
as flags; optional ones are flags. Every runbook task also takes the common flags.
"""

from __future__ import annotations

import inspect
from typing import Any

from invoke.collection import Collection
from invoke.tasks import Task

from runbooks.catalog import load_catalog
from runbooks.engine.registry import Registry, RunbookSpec

COMMON_FLAGS: dict[str, tuple[Any, str]] = {
    "dry_run": (False, "show the plan computed from live state and change nothing"),
    "yes": (False, "do not ask for confirmation (needed without a terminal)"),
    "json": (False, "print one JSON document on stdout, nothing else"),
    "no_wait": (False, "submit, print the execution id and return (exit 3 while pending)"),
    "reason": (None, "why you are doing this (shown in the plan, approvals and audit log)"),
    "break_glass": (False, "emergency path where policy allows it; needs --reason and --incident"),
    "incident": (None, "PagerDuty incident id this request belongs to"),
}


def runbook_task(spec: RunbookSpec[Any]) -> Task[Any]:
    """An invoke Task whose signature mirrors the runbook's parameter model."""
    parameters = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    help_text: dict[str, str] = {}
    taken = set()
    # Required parameters first (in declaration order: that is the positional order).
    fields = sorted(spec.params.model_fields.items(), key=lambda item: not item[1].is_required())
    for name, field in fields:
        taken.add(name)
        if field.is_required():
            parameters.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD))
        else:
            default = field.default if isinstance(field.default, bool) else None
            parameters.append(
                inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
            )
        help_text[name] = field.description or ""
    for name, (default, text) in COMMON_FLAGS.items():
        if name in taken:
            raise ValueError(f"runbook {spec.name} declares {name!r}, a reserved common flag")
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        )
        help_text[name] = text

    def body(c: Any, **kwargs: Any) -> None:
        from runbook_cli.commands import run_runbook

        run_runbook(spec.name, kwargs)

    body.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    body.__doc__ = spec.doc
    body.__name__ = spec.short_name.replace("-", "_")
    return Task(body, name=spec.short_name, help=help_text, auto_shortflags=False)


def build_namespace(registry: Registry | None = None) -> Collection:
    """The root collection: runbooks from the registry, then runs/audit/config/bot."""
    from runbook_cli import tasks_admin, tasks_approvals

    registry = registry if registry is not None else load_catalog()
    root = Collection()
    namespaces: dict[str, Collection] = {}
    prefixes = {spec.namespace for spec in registry if spec.namespace}
    for spec in registry:
        task = runbook_task(spec)
        namespace = spec.namespace or (spec.name if spec.name in prefixes else None)
        if namespace is None:
            root.add_task(task)
            continue
        if namespace not in namespaces:
            namespaces[namespace] = Collection(namespace)
            root.add_collection(namespaces[namespace])
        # `rollback` beside `rollback.history`: the collection's default task answers to the
        # bare name, so `invoke rollback production` still works.
        namespaces[namespace].add_task(task, default=spec.namespace is None)
    for collection in (*tasks_admin.collections(), *tasks_approvals.collections()):
        root.add_collection(collection)
    return root
