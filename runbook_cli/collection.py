"""Build the invoke collection from the runbook registry plus the fixed task namespaces.

A runbook ``dr.failover`` becomes task ``failover`` in collection ``dr``; ``rollback`` becomes
a root task. Required parameters are positional (in declaration order) and may also be given
as flags; optional ones are flags. Every runbook task also takes the common flags.
"""

from __future__ import annotations

import inspect
import os
import re
import textwrap
from typing import TYPE_CHECKING, Any

from invoke.collection import Collection
from invoke.tasks import Task

if TYPE_CHECKING:
    from runbooks.engine import Registry, RunbookSpec

COMMON_FLAGS: dict[str, tuple[Any, str]] = {
    "dry_run": (False, "show the plan computed from live state and change nothing"),
    "yes": (False, "do not ask for confirmation (needed without a terminal)"),
    "json": (False, "print one JSON document on stdout, nothing else"),
    "no_wait": (False, "submit, print the execution id and return (exit 3 while pending)"),
    "reason": (None, "why you are doing this (shown in the plan, approvals and audit log)"),
    "break_glass": (False, "emergency path where policy allows it; needs --reason and --incident"),
    "incident": (None, "PagerDuty incident id this request belongs to"),
}


#: One runbook as the CLI needs it: names, help text and parameters (no pydantic model).
TaskInfo = dict[str, Any]


def describe(spec: RunbookSpec[Any]) -> TaskInfo:
    """What the task table keeps of a runbook: enough to build its invoke task."""
    fields = sorted(spec.params.model_fields.items(), key=lambda item: not item[1].is_required())
    return {
        "name": spec.name,
        "short_name": spec.short_name,
        "namespace": spec.namespace,
        "doc": spec.doc,
        "params": [
            {
                "name": name,
                "required": field.is_required(),
                "default": field.default if isinstance(field.default, bool) else None,
                "kind": _kind(field.annotation),
                "help": field.description or "",
            }
            for name, field in fields
        ],
    }


def _kind(annotation: Any) -> str:
    """``int`` for an integer parameter (``int`` or ``int | None``), else ``str``: invoke shows
    ``--replicas=INT`` and refuses ``--replicas six`` before the runbook is loaded."""
    import types
    import typing

    if annotation is int:
        return "int"
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if members == [int]:
            return "int"
    return "str"


class _RunbookTask(Task[Any]):
    """A Task whose integer parameters are typed (invoke infers a kind only from a default)."""

    def __init__(self, body: Any, *, ints: set[str], **kwargs: Any) -> None:
        self.ints = ints
        super().__init__(body, **kwargs)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        if name in self.ints:
            opts["kind"] = int
        return opts


def _fingerprint() -> str:
    """Changes whenever a file that could change a runbook's task does (runbooks/**.py and
    this module, which describes them)."""
    import hashlib
    import sys
    from pathlib import Path

    import runbooks

    root = Path(runbooks.__file__).parent
    digest = hashlib.sha256(sys.version.encode())
    for path in [*sorted(root.rglob("*.py")), Path(__file__)]:
        stat = path.stat()
        digest.update(f"{path.name}:{path.parent}:{stat.st_mtime_ns}:{stat.st_size}\n".encode())
    return digest.hexdigest()[:20]


def _cache_dir() -> Any:
    import os
    from pathlib import Path

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "runbook-bot"


def task_table() -> list[TaskInfo]:
    """Every runbook of the catalog as a task description, cached per source fingerprint.

    Building it imports pydantic, the configuration models and every runbook module, which
    is most of ``invoke --list``'s time; the table is the same until a file under
    ``runbooks/`` changes, so it is read from the cache (``$XDG_CACHE_HOME/runbook-bot``)
    when it can be. An unreadable or unwritable cache only costs the import.
    """
    import json

    path = _cache_dir() / f"tasks-{_fingerprint()}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cached, list):
            return cached
    except (OSError, ValueError):
        pass
    from runbooks.catalog import load_catalog

    table = [describe(spec) for spec in load_catalog()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(table), encoding="utf-8")
        partial.replace(path)
    except OSError:
        pass
    return table


def runbook_task(spec: RunbookSpec[Any]) -> Task[Any]:
    """An invoke Task whose signature mirrors the runbook's parameter model."""
    return task_from(describe(spec))


def task_from(info: TaskInfo) -> Task[Any]:
    """An invoke Task for a described runbook: required parameters positional, then flags."""
    parameters = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    help_text: dict[str, str] = {}
    taken = set()
    for param in info["params"]:
        name = param["name"]
        taken.add(name)
        if param["required"]:
            parameters.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD))
        else:
            parameters.append(
                inspect.Parameter(
                    name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=param["default"]
                )
            )
        help_text[name] = param["help"]
    for name, (default, text) in COMMON_FLAGS.items():
        if name in taken:
            raise ValueError(f"runbook {info['name']} declares {name!r}, a reserved common flag")
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        )
        help_text[name] = text
    runbook_name = info["name"]

    def body(c: Any, **kwargs: Any) -> None:
        from runbook_cli.commands import run_runbook

        run_runbook(runbook_name, kwargs)

    body.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    body.__doc__ = info["doc"]
    body.__name__ = info["short_name"].replace("-", "_")
    ints = {p["name"] for p in info["params"] if p.get("kind") == "int"}
    return _RunbookTask(
        body, ints=ints, name=info["short_name"], help=help_text, auto_shortflags=False
    )


def build_namespace(registry: Registry | None = None) -> Collection:
    """The root collection: runbooks from the registry, then runs/audit/config/bot."""
    from runbook_cli import (
        tasks_admin,
        tasks_approvals,
        tasks_drills,
        tasks_incidents,
        tasks_readiness,
    )

    table = task_table() if registry is None else [describe(spec) for spec in registry]
    root = Collection()
    namespaces: dict[str, Collection] = {}
    prefixes = {info["namespace"] for info in table if info["namespace"]}
    for info in sorted(table, key=lambda i: str(i["name"])):
        task = task_from(info)
        own = info["namespace"]
        namespace = own or (info["name"] if info["name"] in prefixes else None)
        if namespace is None:
            root.add_task(task)
            continue
        if namespace not in namespaces:
            namespaces[namespace] = Collection(namespace)
            root.add_collection(namespaces[namespace])
        # `rollback` beside `rollback.history`: the collection's default task answers to the
        # bare name, so `invoke rollback production` still works.
        namespaces[namespace].add_task(task, default=own is None)
    for collection in (
        *tasks_admin.collections(),
        *tasks_approvals.collections(),
        *tasks_drills.collections(),
        *tasks_incidents.collections(),
        *tasks_readiness.collections(),
    ):
        root.add_collection(collection)
    _first_sentence_first(root)
    return root


#: The end of a sentence: a full stop (or ! ?) followed by a capital, a backquote or the end.
SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z`]|\s*$)")


def first_sentence_first(doc: str) -> str:
    """The docstring with its whole first sentence on its first line.

    ``--list`` shows only a task's first docstring line (invoke's ``helpline``); a sentence
    wrapped over two lines would be listed cut in the middle.
    """
    text = inspect.cleandoc(doc)
    paragraph, gap, rest = text.partition("\n\n")
    joined = " ".join(paragraph.split())
    end = SENTENCE_END.search(joined)
    first, more = (joined[: end.end()], joined[end.end() :].strip()) if end else (joined, "")
    if more:
        first += "\n" + textwrap.fill(more, width=88)
    return first + gap + rest


def _first_sentence_first(collection: Collection) -> None:
    for task in collection.tasks.values():
        if task.__doc__:
            task.__doc__ = first_sentence_first(task.__doc__)
    for child in collection.collections.values():
        _first_sentence_first(child)
