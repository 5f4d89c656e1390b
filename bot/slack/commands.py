"""Slash commands generated from the runbook registry, parsed with the CLI's rules.

One command per namespace (``/rollback``, ``/scale``, ``/dr``...), root runbooks by their own
name (``/selftest``), and ``/runbook`` for the admin verbs. The first word picks the runbook
inside a namespace (``/scale pods ...``); a namespace whose own name is a runbook takes it when
the first word is not a sub-command (``/rollback production``). Then, as in the terminal:
required parameters positional in declaration order or as flags, optional ones as flags
(``--to-revision 4`` or ``--to-revision=4``), and the common flags ``--dry-run``,
``--reason TEXT``, ``--break-glass``, ``--incident ID``.

Parsing is pure (no I/O): it runs inside the 3-second ack.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from runbooks.engine import Registry, RunbookSpec, flag, require_break_glass_context
from runbooks.engine.errors import InvalidInput

#: Flags every runbook command takes in Slack, with whether they take a value.
COMMON_FLAGS: dict[str, tuple[bool, str]] = {
    "dry_run": (False, "show the plan computed from live state and change nothing"),
    "reason": (True, "why you are doing this (shown on the card and in the audit log)"),
    "break_glass": (False, "emergency path where policy allows it; needs --reason and --incident"),
    "incident": (True, "PagerDuty incident id this request belongs to"),
}
#: Terminal-only flags: refused with an explanation rather than as unknown.
TERMINAL_ONLY = {"yes", "json", "no_wait"}
ADMIN_VERBS: dict[str, str] = {
    "list": "/runbook list — recent executions",
    "show": "/runbook show ID — one execution with its steps",
    "cancel": "/runbook cancel ID [--reason TEXT] — stop a pending or running execution",
    "approve": "/runbook approve ID — approve a pending execution",
    "deny": "/runbook deny ID --reason TEXT — deny a pending execution",
    "answer": "/runbook answer ID CHOICE [--reason TEXT] — answer a running step's question "
    "(the rollback gate: healthy or failed)",
    "readiness": "/runbook readiness [ENV] — would each runbook work now? every readiness "
    "check against live state, read-only: the problems, and how many checks passed",
    "help": "/runbook help — this list",
}


class UsageError(InvalidInput):
    """Bad command text; the message says what was wrong, the hint shows the right form."""


@dataclass(frozen=True)
class Parsed:
    command: str
    runbook: str | None = None  # None: an admin verb or help
    params: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    verb: str | None = None  # admin verb (/runbook list|show|...) or "help"
    args: list[str] = field(default_factory=list)

    @property
    def dry_run(self) -> bool:
        return bool(self.flags.get("dry_run"))


DRILL_VERBS = {
    "list": "/drills list — the drills: next fire (UTC and local), last fire, paused",
    "run": "/drills run NAME — run a drill now, as you (the plan first, as for any command)",
    "pause": "/drills pause NAME --reason TEXT — its fires are recorded as paused, not run",
    "resume": "/drills resume NAME — its fires run again",
    "report": "/drills report [NAME] — each drill's recent runs: verdict, RTO/RPO against "
    "targets, with the trend chart posted as an image",
    "help": "/drills help — this list",
}


INCIDENT_VERBS = {
    "list": "/incident list [ENV] — open PagerDuty incidents of the environments' services",
    "show": "/incident show ID — an incident and its timeline notes",
    "ack": "/incident ack ID — acknowledge it, as you",
    "resolve": "/incident resolve ID — resolve it, as you",
    "note": "/incident note ID TEXT — add a note to its timeline, as you",
    "run": "/incident ID COMMAND... — a runbook command linked to the incident "
    "(e.g. `/incident P1ABC23 rollback production`): its notes go to the incident",
    "help": "/incident help — this list",
}
INCIDENT_ID = re.compile(r"^P[A-Z0-9]{4,15}$")


def command_names(registry: Registry) -> list[str]:
    """Every slash command the registry implies, plus ``/runbook``, ``/drills``, ``/incident``."""
    names = {spec.namespace or spec.name for spec in registry}
    return sorted(f"/{name}" for name in names | {"runbook", "drills", "incident"})


def _specs_for(registry: Registry, name: str) -> tuple[RunbookSpec[Any] | None, dict[str, Any]]:
    """(the namespace's own runbook, its sub-commands by first word)."""
    own = None
    subs: dict[str, RunbookSpec[Any]] = {}
    for spec in registry:
        if spec.name == name:
            own = spec
        elif spec.namespace == name:
            subs[spec.short_name] = spec
    return own, subs


def _fields(spec: RunbookSpec[Any]) -> tuple[list[str], dict[str, Any]]:
    """(required names in declaration order, every field by name)."""
    fields = dict(spec.params.model_fields)
    required = [name for name, f in fields.items() if f.is_required()]
    return required, fields


def _is_bool(field_info: Any) -> bool:
    return field_info.annotation is bool


def usage(spec: RunbookSpec[Any], command: str, *, environments: Sequence[str] = ()) -> str:
    """``/rollback ENVIRONMENT [--region REGION] ...`` and what each part means (with the
    configured ``environments``, when given, as the environment's choices)."""
    required, fields = _fields(spec)
    head = command if spec.namespace is None else f"{command} {spec.short_name}"
    parts = [head, *(name.upper() for name in required)]
    lines = []
    for name, info in fields.items():
        if name in required:
            text = info.description or ""
            if name == "environment" and environments:
                text += f" (one of: {', '.join(environments)})"
            lines.append(f"• `{name.upper()}` (or `{flag(name)}`): {text}")
            continue
        parts.append(f"[{flag(name)}]" if _is_bool(info) else f"[{flag(name)} {name.upper()}]")
        lines.append(f"• `{flag(name)}`: {info.description or ''}")
    parts.append("[--dry-run] [--reason TEXT] [--break-glass --incident ID]")
    return "\n".join([f"`{' '.join(parts)}`", spec.summary, *lines])


def namespace_usage(registry: Registry, command: str, *, environments: Sequence[str] = ()) -> str:
    name = command.lstrip("/")
    if name == "runbook":
        return "\n".join(ADMIN_VERBS.values())
    if name == "drills":
        return "\n".join(DRILL_VERBS.values())
    if name == "incident":
        return "\n".join(INCIDENT_VERBS.values())
    own, subs = _specs_for(registry, name)
    forms = []
    if own is not None:
        forms.append(usage(own, command, environments=environments))
    forms += [usage(spec, command, environments=environments) for _, spec in sorted(subs.items())]
    return "\n\n".join(forms)


def parse(
    registry: Registry, command: str, text: str, *, environments: Sequence[str] = ()
) -> Parsed:
    """Turn ``/command text`` into a runbook name, raw parameters and flags, or explain why not.

    ``environments``: the configured ones, named when the environment is missing.
    """
    name = command.lstrip("/")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(
            f"could not read `{command} {text}`: {exc}", hint="close the quote you opened"
        ) from None
    if name == "runbook":
        return _parse_admin(command, words)
    if name == "drills":
        return _parse_drills(command, words)
    if name == "incident":
        return _parse_incident(registry, command, words, environments=environments)
    own, subs = _specs_for(registry, name)
    if own is None and not subs:
        raise UsageError(
            f"unknown command {command}",
            hint="commands: " + ", ".join(command_names(registry)),
        )
    if words and words[0] == "help":
        return Parsed(command=command, verb="help")
    if words and words[0] in subs:
        spec = subs[words[0]]
        words = words[1:]
    elif own is not None:
        spec = own
    else:
        what = f"`{words[0]}`" if words else "nothing"
        raise UsageError(
            f"{command} needs one of: {', '.join(sorted(subs))} (got {what})",
            hint=namespace_usage(registry, command, environments=environments),
        )
    if words and words[0] == "help":
        return Parsed(command=command, runbook=spec.name, verb="help")
    params, flags = _parse_words(spec, command, words, environments=environments)
    return Parsed(command=command, runbook=spec.name, params=params, flags=flags)


def unknown_flag(key: str, known: list[str]) -> str:
    """``unknown flag --to-revison; did you mean --to-revision?``: the nearest flag the
    command has (difflib), when one is near enough."""
    import difflib

    given = flag(key)
    candidates = sorted({flag(name) for name in known})
    near = difflib.get_close_matches(given, candidates, n=1)
    guess = f"; did you mean {near[0]}?" if near else ""
    return f"unknown flag {given}{guess}"


def _parse_words(
    spec: RunbookSpec[Any], command: str, words: list[str], *, environments: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    required, fields = _fields(spec)
    params: dict[str, Any] = {}
    flags: dict[str, Any] = {}
    positional: list[str] = []
    right_form = usage(spec, command, environments=environments)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("--"):
            positional.append(word)
            continue
        key, has_value, value = word[2:].partition("=")
        key = key.replace("-", "_")
        if key in TERMINAL_ONLY:
            raise UsageError(
                f"{flag(key)} is for the terminal; in Slack you confirm with the button",
                hint=right_form,
            )
        if key in COMMON_FLAGS:
            takes_value = COMMON_FLAGS[key][0]
            target = flags
        elif key in fields:
            takes_value = not _is_bool(fields[key])
            target = params
        else:
            raise UsageError(unknown_flag(key, [*fields, *COMMON_FLAGS]), hint=right_form)
        if not takes_value:
            if has_value:
                raise UsageError(f"{flag(key)} takes no value (got {value!r})", hint=right_form)
            target[key] = True
            continue
        if not has_value:
            if i >= len(words) or words[i].startswith("--"):
                raise UsageError(f"{flag(key)} needs a value", hint=right_form)
            value = words[i]
            i += 1
        if key in target:
            raise UsageError(f"{flag(key)} given twice", hint=right_form)
        target[key] = value
    missing = [name for name in required if name not in params]
    if len(positional) > len(missing):
        extra = " ".join(positional[len(missing) :])
        raise UsageError(f"unexpected `{extra}`", hint=right_form)
    params.update(zip(missing, positional, strict=False))
    still = [name for name in required if name not in params]
    if still:
        named = ", ".join(name.upper() for name in still)
        if "environment" in still and environments:
            named += f" (one of: {', '.join(environments)})"
        raise UsageError(f"missing {named}", hint=right_form)
    if flags.get("break_glass"):
        try:
            require_break_glass_context(flags.get("reason"), flags.get("incident"))
        except InvalidInput as exc:
            raise UsageError(exc.message, hint=right_form) from None
    return params, flags


def _parse_admin(command: str, words: list[str]) -> Parsed:
    all_forms = "\n".join(ADMIN_VERBS.values())
    if not words or words[0] == "help":
        return Parsed(command=command, verb="help")
    verb, rest = words[0], words[1:]
    if verb not in ADMIN_VERBS:
        raise UsageError(f"unknown /runbook verb `{verb}`", hint=all_forms)
    flags: dict[str, Any] = {}
    args: list[str] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        i += 1
        if word.startswith("--"):
            key, has_value, value = word[2:].partition("=")
            if key != "reason":
                raise UsageError(unknown_flag(key, ["reason"]), hint=ADMIN_VERBS[verb])
            if not has_value:
                if i >= len(rest):
                    raise UsageError("--reason needs a value", hint=ADMIN_VERBS[verb])
                value = rest[i]
                i += 1
            flags["reason"] = value
        else:
            args.append(word)
    wants_id = verb in {"show", "cancel", "approve", "deny"}
    if verb == "answer" and len(args) != 2:
        raise UsageError(
            "/runbook answer needs an execution id and a choice", hint=ADMIN_VERBS[verb]
        )
    if verb == "answer":
        return Parsed(command=command, verb=verb, args=args, flags=flags)
    if verb == "readiness":
        if len(args) > 1 or flags:
            extra = " ".join(args[1:]) or "--reason"
            raise UsageError(f"unexpected `{extra}`", hint=ADMIN_VERBS[verb])
        return Parsed(command=command, verb=verb, args=args)
    if wants_id and len(args) != 1:
        raise UsageError(f"/runbook {verb} needs one execution id", hint=ADMIN_VERBS[verb])
    if not wants_id and args:
        raise UsageError(f"unexpected `{' '.join(args)}`", hint=ADMIN_VERBS[verb])
    if verb == "deny" and not flags.get("reason"):
        raise UsageError("a denial needs --reason TEXT", hint=ADMIN_VERBS[verb])
    return Parsed(command=command, verb=verb, args=args, flags=flags)


def _parse_incident(
    registry: Registry, command: str, words: list[str], *, environments: Sequence[str] = ()
) -> Parsed:
    all_forms = "\n".join(INCIDENT_VERBS.values())
    if not words or words[0] == "help":
        return Parsed(command=command, verb="help")
    verb, args = words[0], words[1:]
    if verb in ("list", "show", "ack", "resolve", "note"):
        if verb == "list" and len(args) > 1:
            raise UsageError(f"unexpected `{' '.join(args[1:])}`", hint=INCIDENT_VERBS["list"])
        if verb in ("show", "ack", "resolve") and len(args) != 1:
            raise UsageError(f"/incident {verb} needs one incident id", hint=INCIDENT_VERBS[verb])
        if verb == "note" and (len(args) < 2 or not " ".join(args[1:]).strip()):
            raise UsageError("/incident note needs an id and text", hint=INCIDENT_VERBS["note"])
        if verb != "list" and not INCIDENT_ID.match(args[0]):
            raise UsageError(
                f"`{args[0]}` is not a PagerDuty incident id (like P1ABC23)",
                hint=INCIDENT_VERBS[verb],
            )
        return Parsed(command=command, verb=verb, args=args)
    if INCIDENT_ID.match(verb):
        if not args:
            raise UsageError(f"/incident {verb} needs a command to run", hint=INCIDENT_VERBS["run"])
        inner = parse(registry, "/" + args[0], shlex.join(args[1:]), environments=environments)
        if inner.runbook is None:
            raise UsageError(
                f"/incident {verb} runs a runbook command, not `/{args[0]} {inner.verb}`",
                hint=INCIDENT_VERBS["run"],
            )
        if inner.flags.get("incident") not in (None, verb):
            raise UsageError(
                f"two incidents: {verb} and --incident {inner.flags['incident']}; name one",
                hint=INCIDENT_VERBS["run"],
            )
        inner.flags["incident"] = verb
        return inner
    raise UsageError(f"unknown /incident verb `{verb}`", hint=all_forms)


def _parse_drills(command: str, words: list[str]) -> Parsed:
    all_forms = "\n".join(DRILL_VERBS.values())
    if not words or words[0] == "help":
        return Parsed(command=command, verb="help")
    verb, rest = words[0], words[1:]
    if verb not in DRILL_VERBS:
        raise UsageError(f"unknown /drills verb `{verb}`", hint=all_forms)
    flags: dict[str, Any] = {}
    args: list[str] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        i += 1
        if not word.startswith("--"):
            args.append(word)
            continue
        key, has_value, value = word[2:].partition("=")
        if key != "reason" or verb != "pause":
            known = ["reason"] if verb == "pause" else []
            raise UsageError(unknown_flag(key, known), hint=DRILL_VERBS[verb])
        if not has_value:
            if i >= len(rest):
                raise UsageError("--reason needs a value", hint=DRILL_VERBS[verb])
            value = rest[i]
            i += 1
        flags["reason"] = value
    if verb in ("run", "pause", "resume") and len(args) != 1:
        raise UsageError(f"/drills {verb} needs one drill name", hint=DRILL_VERBS[verb])
    if verb == "pause" and not str(flags.get("reason") or "").strip():
        raise UsageError("pausing a drill needs --reason TEXT", hint=DRILL_VERBS["pause"])
    if verb == "list" and args:
        raise UsageError(f"unexpected `{' '.join(args)}`", hint=DRILL_VERBS["list"])
    if verb == "report" and len(args) > 1:
        raise UsageError(f"unexpected `{' '.join(args[1:])}`", hint=DRILL_VERBS["report"])
    return Parsed(command=command, verb=verb, args=args, flags=flags)
