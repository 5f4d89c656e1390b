"""``python -m sandbox channel|incident|fault``: look at and break the running sandbox.

Each reads the running sandbox's ``env`` file for the emulators' addresses (as ``sandbox.dms``
does) and talks to them over HTTP, so it works from any terminal:

- ``channel CHANNEL``: what the bot posted in a Slack channel, as plain text, oldest first;
- ``incident TITLE [--service ID] [--urgency high|low]``: opens an incident in the sandbox
  PagerDuty and prints its id (for ``/incident ID ...`` and ``incident.*``);
- ``fault KIND [--region R] [--value V] [--off]``: turns one of the emulators' fault hooks on
  or off (``FAULTS`` lists them; README "Fault hooks" has the table).

Bad input (an unknown kind, region, service or urgency, a value that is not a number) is
refused with exit 2 before anything is sent; a sandbox that is not running is exit 2 too.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runbooks.engine import Settings, read_sandbox_env
from sandbox.health import DEFAULTS
from sandbox.kube.seed import LAYOUT
from sandbox.pagerduty import SERVICES, URGENCIES
from sandbox.slack import text_of

EXIT_REFUSED = 2
NOT_RUNNING = "the sandbox is not running: start it with `python3 dev.py serve` first"


class Refusal(Exception):
    """Bad input or a sandbox that is not there: said in words, exit 2, nothing sent."""


@dataclass(frozen=True)
class Fault:
    """One fault hook: which emulator, what ``--value`` means and its default."""

    emulator: str  # kube, health, atlas, pagerduty, slack
    meaning: str
    value: str | None = None  # what --value means (None: takes no value)
    default: str | None = None  # the value when --value is not given (None: required)
    number: bool = False  # --value must be a number


FAULTS: dict[str, Fault] = {
    "oom": Fault(
        "kube",
        "pods whose container memory limit is below VALUE crash (OOMKilled, never ready)",
        value="a memory quantity (the seed's limit is 2Gi)",
        default=None,
    ),
    "broken-image": Fault(
        "kube",
        "pods running image VALUE never become ready (a broken rollout); images tagged "
        ":broken always are",
        value="an image, e.g. app-api:1.4.1",
        default=None,
    ),
    "conflicts": Fault(
        "kube",
        "the next VALUE writes to the Kubernetes API answer 409 Conflict",
        value="a count",
        default="3",
        number=True,
    ),
    "health": Fault("health", "the region's /health answers 503"),
    "error-rate": Fault(
        "health",
        "Prometheus answers the region's 5xx error rate as VALUE (0..1; 0.002 when off)",
        value="a fraction",
        default="0.08",
        number=True,
    ),
    "latency": Fault(
        "health",
        "Prometheus answers the region's p95 latency as VALUE seconds (0.18 when off)",
        value="seconds",
        default="1.5",
        number=True,
    ),
    "probe-failures": Fault(
        "health",
        "Prometheus answers VALUE failing health probes in the region (0 when off)",
        value="a count",
        default="1",
        number=True,
    ),
    "prometheus-down": Fault("health", "the Prometheus query API answers 503"),
    "replication-lag": Fault(
        "atlas",
        "the production database's member in the region lags VALUE seconds (0 when off)",
        value="seconds",
        default="600",
        number=True,
    ),
    "pagerduty-429": Fault(
        "pagerduty",
        "the next VALUE PagerDuty API calls answer 429 (Retry-After 1)",
        value="a count",
        default="3",
        number=True,
    ),
    "slack-429": Fault(
        "slack",
        "the next VALUE Slack Web API calls answer 429 (Retry-After 1)",
        value="a count",
        default="3",
        number=True,
    ),
}
#: Faults of one region (the others act on the whole emulator).
REGIONAL = {"oom", "broken-image", "conflicts", "health", "error-rate", "latency"} | {
    "probe-failures",
    "replication-lag",
}


def _env(settings: Settings) -> dict[str, str]:
    env = read_sandbox_env(settings.state_dir / "sandbox" / "env")
    if "RUNBOOK_BOT_SANDBOX_SLACK" not in env:
        raise Refusal(NOT_RUNNING)
    return env


def _call(
    method: str,
    url: str,
    doc: Any = None,
    *,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Any:
    data = None if doc is None else json.dumps(doc).encode()
    request = urllib.request.Request(  # noqa: S310 - the sandbox's own local URLs
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:  # noqa: S310
            body = answer.read()
    except urllib.error.HTTPError as exc:
        raise Refusal(f"{url} answered {exc.code}: {exc.read().decode(errors='replace')}") from None
    except OSError as exc:
        raise Refusal(f"{url} did not answer ({exc}); {NOT_RUNNING}") from None
    return json.loads(body) if body else None


# --- channel ---------------------------------------------------------------------------------


def channel_messages(slack_url: str, channel: str) -> list[dict[str, Any]]:
    """What the bot posted in ``channel`` that everyone there sees, oldest first (thread
    replies included, ephemeral answers to one person not)."""
    messages: list[dict[str, Any]] = _call("GET", slack_url + "/_sandbox/messages")
    return [m for m in messages if m["channel"] == channel and m["ephemeral_to"] is None]


def channel(settings: Settings, name: str) -> int:
    wanted = name.removeprefix("#").strip()
    if not wanted:
        raise Refusal("name a channel, e.g. invoke sandbox.channel C0OPS")
    messages = channel_messages(_env(settings)["RUNBOOK_BOT_SANDBOX_SLACK"], wanted)
    for message in messages:
        thread = " (thread)" if message["thread_ts"] else ""
        edited = f" (updated {message['updates']}x)" if message["updates"] else ""
        print(f"--- #{wanted}{thread}{edited}")
        print(text_of(message))
        for shared in message.get("files") or []:
            print(f"[file: {shared.get('title') or shared.get('name') or shared.get('id')}]")
    if not messages:
        print(f"nothing posted in #{wanted} yet")
    return 0


# --- incident --------------------------------------------------------------------------------


def incident(settings: Settings, title: str, *, service: str, urgency: str) -> int:
    if not title.strip():
        raise Refusal('an incident needs a title, e.g. invoke sandbox.incident "api 5xx"')
    if service not in SERVICES:
        known = ", ".join(f"{sid} ({s['name']})" for sid, s in SERVICES.items())
        raise Refusal(f"no service {service!r} in the sandbox PagerDuty; known: {known}")
    if urgency not in URGENCIES:
        raise Refusal(f"--urgency {urgency!r}: use {' or '.join(URGENCIES)}")
    env = _env(settings)
    if "PAGERDUTY_API_URL" not in env:
        raise Refusal("the running sandbox has no PagerDuty emulator")
    context = ssl.create_default_context(cafile=env.get("PAGERDUTY_CA_BUNDLE"))
    answer = _call(
        "POST",
        env["PAGERDUTY_API_URL"] + "/_sandbox/incidents",
        {"title": title, "service_id": service, "urgency": urgency},
        context=context,
    )
    opened = answer["incident"]
    print(opened["id"])
    print(
        f"opened {opened['id']} ({opened['urgency']} urgency) on {opened['service']['summary']}: "
        f"{opened['title']}"
    )
    # The incident's own environment (its service's), never a fixed one.
    environment = SERVICES[service]["environment"]
    print(
        f"try: invoke incident.show {opened['id']}; "
        f"invoke rollback {environment} --incident {opened['id']} --dry-run; in Slack: "
        f"/incident {opened['id']} rollback {environment} --dry-run"
    )
    return 0


# --- fault -----------------------------------------------------------------------------------


def _kube_urls(env: dict[str, str]) -> dict[str, str]:
    """Each region's Kubernetes emulator, read from the sandbox's kubeconfig."""
    doc = yaml.safe_load(Path(env["KUBECONFIG"]).read_text())
    clusters = {c["name"]: c["cluster"]["server"] for c in doc["clusters"]}
    return {c["name"]: clusters[c["context"]["cluster"]] for c in doc["contexts"]}


def _number(kind: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise Refusal(f"{kind} --value {value!r} is not a number") from None
    if number < 0 or number != number:  # noqa: PLR0124 - NaN
        raise Refusal(f"{kind} --value {value!r} must be a number of zero or more")
    if kind == "error-rate" and number > 1:
        raise Refusal(f"error-rate --value {value!r} is a fraction from 0 to 1 (0.08 is 8 %)")
    return number


def fault(settings: Settings, kind: str, *, region: str, value: str, off: bool) -> int:
    """Turn a fault hook on (or ``off``) in ``region`` (default every region)."""
    spec = FAULTS.get(kind)
    if spec is None:
        raise Refusal(f"no fault {kind!r}; known: {', '.join(FAULTS)}")
    if region and region not in LAYOUT:
        raise Refusal(f"no region {region!r} in the sandbox; known: {', '.join(LAYOUT)}")
    if region and kind not in REGIONAL:
        raise Refusal(f"{kind} is not per region: leave out --region")
    if value and (off or spec.value is None):
        raise Refusal(f"{kind}{' --off' if off else ''} takes no --value")
    given = value or spec.default or ""
    if not off and spec.value is not None and not given:
        raise Refusal(f"{kind} needs --value ({spec.value})")
    if spec.number and not off:
        _number(kind, given)
    if kind == "oom" and not off:
        from sandbox.kube.emulator import memory_quantity

        if memory_quantity(given) is None:
            raise Refusal(f"oom --value {given!r} is not a memory quantity (e.g. 3Gi, 512Mi)")
    env = _env(settings)
    regions = [region] if region else list(LAYOUT)
    said = _apply(env, kind, regions, given, off=off)
    state = "off" if off else "on"
    where = f" in {', '.join(regions)}" if kind in REGIONAL else ""
    print(f"{kind} {state}{where}: {said}")
    return 0


def _apply(env: dict[str, str], kind: str, regions: list[str], value: str, *, off: bool) -> str:
    spec = FAULTS[kind]
    if spec.emulator == "kube":
        urls = _kube_urls(env)
        body: dict[str, Any]
        if kind == "oom":
            body = {} if off else {"memory_limit_below": value}
            path, said = "oom", "nothing is OOMKilled" if off else f"memory limits below {value}"
        elif kind == "broken-image":
            body = {"images": [] if off else [value]}
            path, said = "broken", "every image can become ready" if off else f"{value} broken"
        else:
            body = {"count": 0 if off else int(float(value))}
            path, said = "conflicts", f"next {body['count']} write(s) answer 409"
        for region in regions:
            _call("POST", f"{urls[region]}/_sandbox/{path}", body)
        return said
    if spec.emulator == "health":
        url = env.get("RUNBOOK_BOT_SANDBOX_HEALTH")
        if url is None:
            raise Refusal("the running sandbox has no health and Prometheus emulator")
        if kind == "prometheus-down":
            _call("POST", url + "/_sandbox/error_rate", {"up": off})
            return "queries answered" if off else "queries answer 503"
        for region in regions:
            if kind == "health":
                _call("POST", url + "/_sandbox/health", {"region": region, "healthy": off})
            elif kind == "error-rate":
                rate = DEFAULTS["error_rate"] if off else float(value)
                _call("POST", url + "/_sandbox/error_rate", {"region": region, "rate": rate})
            else:
                signal = "latency_p95" if kind == "latency" else "health_failures"
                level = DEFAULTS[signal] if off else float(value)
                doc = {"signal": signal, "region": region, "value": level}
                _call("POST", url + "/_sandbox/signal", doc)
        return {
            "health": "/health answers 200" if off else "/health answers 503",
            "error-rate": f"error rate {DEFAULTS['error_rate'] if off else value}",
            "latency": f"p95 {DEFAULTS['latency_p95'] if off else value}s",
            "probe-failures": f"{0 if off else value} failing probe(s)",
        }[kind]
    if spec.emulator == "atlas":
        seconds = 0.0 if off else float(value)
        for region in regions:
            _call(
                "POST",
                env["ATLAS_API_URL"] + "/_sandbox/lag",
                {"region": region, "seconds": seconds},
            )
        return f"replication lag {seconds:g}s"
    count = 0 if off else int(float(value))
    if spec.emulator == "pagerduty":
        context = ssl.create_default_context(cafile=env.get("PAGERDUTY_CA_BUNDLE"))
        doc = {"path_prefix": "/", "count": count, "reset": 1}
        _call("POST", env["PAGERDUTY_API_URL"] + "/_sandbox/rate_limit", doc, context=context)
    else:
        slack = env["RUNBOOK_BOT_SANDBOX_SLACK"]
        _call("POST", slack + "/_sandbox/rate_limit", {"method": "*", "count": count})
    return f"next {count} call(s) answer 429"
