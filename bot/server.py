"""The bot's production HTTP server: waitress (threaded WSGI) serving a small router.

Why waitress: a slow request must never block the others. waitress runs each request in a
worker thread, so Bolt's synchronous ``App`` (the Slack issue) can sit behind its WSGI adapter
without the event-loop stall FIELD-NOTES describes for the Starlette adapter. Pure Python,
no build tools, production grade.

Every couple of seconds (``RUNBOOK_BOT_SWEEP_INTERVAL``), on the leader, the engine's
supervisor resumes executions whose process died (expired leases), expires pending approvals
that ran out of time and starts approved executions whose requester is not waiting for them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import structlog

from runbooks.engine import FollowerThread, Worker, Workers, redact_text
from runbooks.engine.errors import RunbookError, StoreFull
from runbooks.engine.wiring import Runtime, open_runtime

if TYPE_CHECKING:
    from bot.slack.app import SlackFrontEnd

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Handler = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
#: How often the alert follower looks for accepted alerts (the webhook wakes it at once;
#: this catches what another replica accepted).
ALERT_POLL_S = 1.0
#: How long shutdown waits for each background thread to stop (a running sweep, a post).
SHUTDOWN_JOIN_S = 10.0
#: Under the readiness probe's timeoutSeconds (3 in deploy/kubernetes), so /ready answers 503
#: with the reason instead of the probe timing out.
READY_STORE_TIMEOUT_S = 2.0
#: Open connections waitress accepts (its default is 100; one Alertmanager burst holds more).
CONNECTION_LIMIT = 500
#: An idle kept-alive connection is closed after this (waitress's default: 120 s).
IDLE_TIMEOUT_S = 30

log = structlog.get_logger("runbook_bot.bot")


class BotApp:
    """A WSGI application: /health, /ready, /metrics and (when Slack is on) /slack/events."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        slack: SlackFrontEnd | None = None,
        warm: threading.Event | None = None,
    ) -> None:
        from bot.metrics import Metrics

        self.runtime = runtime
        self.slack = slack
        #: Set once ``preload`` has imported the SDKs; None: nothing to wait for.
        self.warm = warm
        self.metrics = Metrics(runtime.engine)
        from bot.webhooks import AlertmanagerWebhook, PagerDutyWebhook

        self.alertmanager = AlertmanagerWebhook(runtime)
        self.pagerduty = PagerDutyWebhook(runtime)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/health"): self.health,
            ("GET", "/ready"): self.ready,
            ("POST", "/webhooks/alertmanager"): self.alertmanager,
            ("POST", "/webhooks/pagerduty"): self.pagerduty,
        }
        self.raw_routes: dict[tuple[str, str], WsgiApp] = {("GET", "/metrics"): self._metrics}
        if slack is not None:
            self.raw_routes[("POST", "/slack/events")] = self._slack_events

    def _metrics(self, _environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = self.metrics.render()
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))]
        )
        return [body]

    def _slack_events(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        assert self.slack is not None
        started = time.perf_counter()
        if self.slack.gate is not None:
            refusal = self.slack.gate.admit(environ)
            if refusal is not None:
                payload = json.dumps({"error": refusal.reason, "message": refusal.message})
                start_response(
                    {400: "400 Bad Request", 401: "401 Unauthorized"}.get(
                        refusal.status, "413 Payload Too Large"
                    ),
                    [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
                )
                return [payload.encode()]
        try:
            # Bolt answers once the listener acked; lazy work continues on its thread pool.
            return list(self.slack.handler(environ, start_response))
        finally:
            self.metrics.slack_ack.observe(time.perf_counter() - started)

    def health(self, _environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Liveness: the process answers."""
        return 200, {"status": "ok"}

    def ready(self, _environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Readiness: the store answers, the configuration is valid and the SDKs are imported
        (a first request that imports the Kubernetes client's API modules holds every thread
        for half a second: measured in bench/alertmanager_bench.py)."""
        from runbooks.engine import load_config

        checks: dict[str, str] = {}
        try:
            self.runtime.store.ping(timeout=READY_STORE_TIMEOUT_S)
            checks["store"] = "ok"
        except Exception as exc:
            first = (str(exc).splitlines() or [""])[0][:200]
            checks["store"] = redact_text(
                f"unreachable ({self.runtime.store.description}): {type(exc).__name__}: {first}"
            )
        try:
            load_config(self.runtime.settings.config_dir)
            checks["config"] = "ok"
        except RunbookError as exc:
            checks["config"] = f"invalid: {exc.message.splitlines()[0]}"
        from runbooks.adapters import kube_context_problems

        try:
            kube = kube_context_problems(load_config(self.runtime.settings.config_dir))
            checks["kube"] = "ok" if not kube else "unresolved: " + "; ".join(kube)
        except RunbookError:
            pass  # the config check above says why
        if self.warm is not None:
            checks["warm"] = "ok" if self.warm.is_set() else "warming up: importing the SDKs"
        ok = all(v == "ok" for v in checks.values())
        return (200 if ok else 503), {"status": "ready" if ok else "not ready", "checks": checks}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        raw = self.raw_routes.get((method, path))
        if raw is not None:
            return raw(environ, start_response)
        handler = self.routes.get((method, path))
        if handler is None:
            every = [*self.routes, *self.raw_routes]
            known = sorted({p for _, p in every})
            status, body = (
                (405 if any(p == path for _, p in every) else 404),
                {"error": f"no route {method} {path}", "routes": known},
            )
        else:
            started = time.perf_counter()
            try:
                status, body = handler(environ)
            except StoreFull as full:
                log.error("state store full", where=path, error=full.message)
                status, body = 503, {"error": full.message}
            except Exception:
                log.exception("request failed", path=path)
                status, body = 500, {"error": "internal error; see the bot's log"}
            if path.startswith("/webhooks/"):
                self.metrics.webhook.labels(path.removeprefix("/webhooks/")).observe(
                    time.perf_counter() - started
                )
        payload = json.dumps(body).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="runbook-bot"'))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [payload]


class Housekeeper(Worker):
    """The engine's supervisor on a timer, while this process holds the ``supervisor`` lease.

    Every sweep (``RUNBOOK_BOT_SWEEP_INTERVAL``, default 2 s, or at once when kicked) expires
    approvals, resumes executions whose lease expired (continuously, not only at start) and
    starts approved executions nobody holds. With several replicas only the leader sweeps.
    """

    def __init__(self, runtime: Runtime, interval: float | None = None) -> None:
        from runbooks.engine import LeaderLease, Supervisor

        engine = runtime.engine
        self.runtime = runtime
        self.interval = runtime.settings.sweep_interval if interval is None else interval
        self.supervisor = Supervisor(engine)
        self.leader = LeaderLease(engine.store, "supervisor", engine.owner, engine.clock)
        super().__init__(
            "housekeeper",
            self.sweep,
            lambda: min(self.interval, self.leader.retry),
            log=log,
            finish=self._release,
            what="housekeeping",
        )

    def sweep(self) -> None:
        if self.leader.acquire() is None:
            return
        done = self.supervisor.sweep()
        for execution_id in done.expired:
            log.info("approval expired", execution_id=execution_id)
        for execution_id in done.resumed:
            log.info("resuming orphaned execution", execution_id=execution_id)
        for execution_id in done.started:
            log.info("starting approved execution", execution_id=execution_id)

    def _release(self) -> None:
        self.leader.release()  # looked up at the end: a bench may swap the scheduler


#: What the first plan would otherwise import on a request's thread (about a second of CPU,
#: holding the interpreter): a burst of webhooks or Slack commands arriving with the first
#: rollback waited behind it.
PRELOAD = (
    "runbooks.adapters.kube",
    "runbooks.adapters.aws",
    "runbooks.adapters.mongo",
    "runbooks.adapters.prometheus",
    "runbooks.adapters.http_health",
)


def preload(done: threading.Event | None = None) -> None:
    """Import the adapters' SDKs in the background once the bot serves (``/ready`` waits for
    it), and whatever they load lazily on first use (the Kubernetes client's API classes)."""
    import importlib

    try:
        for name in PRELOAD:
            try:
                module = importlib.import_module(name)
                warm = getattr(module, "warm", None)
                if callable(warm):
                    warm()
            except Exception:  # an SDK missing here fails the first plan that needs it, clearly
                log.warning("could not preload", module=name)
    finally:
        if done is not None:
            done.set()


class AlertFollower(FollowerThread):
    """Alertmanager's accepted alerts (``alert.request`` / ``alert.escalate`` events) turned
    into requests and pages, on the ``alerts`` leader lease (one replica at a time)."""

    def __init__(self, runtime: Runtime, *, kick: Any = None, page: Any = None) -> None:
        from runbooks.engine import AlertRequests, require_valid_routes

        require_valid_routes(runtime.config, runtime.engine.registry)
        engine = runtime.engine
        super().__init__(
            engine.store,
            engine.clock,
            AlertRequests(engine, kick=kick, page=page),
            name="alerts",
            owner=engine.owner,
            poll=ALERT_POLL_S,
        )


class DrillTicker(Worker):
    """The drill scheduler (``runbooks.engine.requesters.drills``) on a timer, on the ``scheduler``
    leader lease: it wakes at the next fire or announcement, and at least every second.

    APScheduler is not used: its job store cannot be shared between replicas, its misfire
    grace defaults to one second and its catch-up is not ours to decide. Fires are recorded
    in the store, so the timer only has to wake up; the engine clock and the store decide.
    """

    def __init__(self, runtime: Runtime, *, kick: Any = None) -> None:
        from runbooks.engine import DrillScheduler, require_valid_drills

        require_valid_drills(runtime.config, runtime.engine.registry)
        self.scheduler = DrillScheduler(runtime.engine, runtime.config.schedules)
        self.on_requested = kick
        super().__init__(
            "drills",
            self._tick,
            lambda: max(0.05, self.scheduler.next_wake() - self.scheduler.clock.now()),
            log=log,
            finish=self._release,
            enabled=bool(self.scheduler.schedules.drills),
            what="drill scheduler",
        )

    def _tick(self) -> None:
        done = self.scheduler.tick()
        for text in done.announced:
            log.info("drill", announcement=text)
        if done.requested and self.on_requested is not None:
            self.on_requested()  # start what needs no approval now, not at the next sweep

    def _release(self) -> None:
        self.scheduler.lease.release()  # looked up at the end: a bench may swap the scheduler


class ReadinessTicker(Worker):
    """Readiness (``runbooks.engine.background.readiness_watch``) on the ``readiness`` leader lease:
    it wakes when the next evaluation is due, and at least every lease renewal."""

    def __init__(self, runtime: Runtime) -> None:
        from runbooks.engine import ReadinessWatch

        self.watch = ReadinessWatch(runtime.engine, runtime.config.schedules.readiness)
        super().__init__(
            "readiness",
            self._tick,
            lambda: max(
                1.0, min(self.watch.due() - self.watch.clock.now(), self.watch.lease.renew)
            ),
            log=log,
            finish=self._release,
            enabled=self.watch.schedule.enabled,
            what="readiness evaluation",
        )

    def _tick(self) -> None:
        done = self.watch.tick()
        if done.evaluated:
            log.info(
                "readiness evaluated",
                opened=len(done.opened),
                reminded=len(done.reminded),
                resolved=len(done.resolved),
            )

    def _release(self) -> None:
        self.watch.lease.release()  # looked up at the end: a bench may swap the scheduler


class ReadinessFollower(FollowerThread):
    """Readiness findings to the ops channel and PagerDuty (low urgency), on the
    ``readiness-notices`` leader lease."""

    def __init__(self, runtime: Runtime, pagerduty: Any) -> None:
        from runbooks.engine import ReadinessNotices

        alert = resolve = None
        if pagerduty is not None and pagerduty.can_page:

            def alert(summary: str, key: str, details: dict[str, Any]) -> None:
                pagerduty.trigger(summary, key, severity="warning", details=details)

            resolve = pagerduty.resolve
        engine = runtime.engine
        super().__init__(
            engine.store,
            engine.clock,
            ReadinessNotices(engine, alert=alert, resolve=resolve),
            name="readiness-notices",
            owner=engine.owner,
            poll=ALERT_POLL_S,
        )


class GitOpsFollower(Worker):
    """GitOps suspensions (``runbooks.kit.gitops.GitOpsWatch``) on the ``gitops`` leader
    lease: every ``RUNBOOK_BOT_GITOPS_INTERVAL`` (default 30 s) it gives automated sync back
    where Git renders the rolled-back release, and pages once where the limit passed."""

    def __init__(self, runtime: Runtime, pagerduty: Any) -> None:
        from runbooks.kit.gitops import GitOpsWatch

        page = None
        if pagerduty is not None and pagerduty.can_page:

            def page(summary: str, key: str, details: dict[str, Any]) -> None:
                pagerduty.trigger(summary, key, details=details)

        self.watch = GitOpsWatch(runtime.engine, page=page)
        #: How often the watch reads suspended applications (docs/gitops.md).
        self.interval = runtime.settings.gitops_interval
        super().__init__(
            "gitops",
            self._tick,
            lambda: min(self.interval, self.watch.lease.renew),
            log=log,
            finish=self._release,
            what="gitops watch",
        )

    def _tick(self) -> None:
        done = self.watch.tick()
        for label in done.resumed:
            log.info("gitops sync resumed", application=label)
        for label in done.expired:
            log.warning("gitops suspension expired", application=label)

    def _release(self) -> None:
        self.watch.lease.release()  # looked up at the end: a bench may swap the scheduler


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the HTTP server")
    serve.add_argument("--port", type=int, default=None, help="port (default: $PORT, else 3000)")
    serve.add_argument(
        "--host",
        default=os.environ.get("HOST", "0.0.0.0"),  # noqa: S104
        help="address to bind (default: $HOST, else 0.0.0.0)",
    )
    serve.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    manifest = sub.add_parser("manifest", help="print the Slack app manifest")
    manifest.add_argument(
        "--url", default=None, help="the bot's public base URL (default: a placeholder)"
    )
    args = parser.parse_args(argv)
    if args.command == "manifest":
        from bot.slack.manifest import PLACEHOLDER_URL, manifest_yaml
        from runbooks.catalog import load_catalog

        sys.stdout.write(manifest_yaml(load_catalog(), args.url or PLACEHOLDER_URL))
        return 0

    from runbooks.adapters import build_adapters, resolve_secret
    from runbooks.catalog import load_catalog
    from runbooks.engine import bot_port, configure_logging, load_settings, resolve_environment

    try:
        port = bot_port(args.port)
    except RunbookError as exc:
        parser.error(exc.message)
    try:
        settings = load_settings()
        configure_logging(settings.log_target or "-")
        runtime = open_runtime(
            settings, registry=load_catalog(), adapters=build_adapters, secrets=resolve_secret
        )
        # Slack's tokens and anything else given as aws-secretsmanager: references.
        resolve_environment(os.environ, resolve_secret)
    except RunbookError as exc:
        print(f"runbook-bot cannot start: {exc}", flush=True)
        return 2

    from waitress.server import create_server

    from bot.slack.app import SlackSettings, build_slack

    housekeeper = Housekeeper(runtime)
    from bot.incidents import IncidentFollower, page_callback
    from runbooks.adapters.pagerduty import PagerDuty, PagerDutySettings

    try:
        pagerduty_settings = PagerDutySettings.from_env()
        pagerduty = PagerDuty(pagerduty_settings) if pagerduty_settings.configured else None
        drills = DrillTicker(runtime, kick=housekeeper.kick)
        alerts = AlertFollower(runtime, kick=housekeeper.kick, page=page_callback(pagerduty))
        readiness = ReadinessTicker(runtime)
        readiness_notices = ReadinessFollower(runtime, pagerduty)
        gitops = GitOpsFollower(runtime, pagerduty)
    except RunbookError as exc:
        print(f"runbook-bot cannot start: {exc}", flush=True)
        return 2
    try:
        slack_settings = SlackSettings.from_env()  # after open_runtime: the sandbox's env applied
    except RunbookError as exc:
        print(f"runbook-bot cannot start: {exc}", flush=True)
        return 2
    slack = None
    socket_handler = None
    if slack_settings.mode is None:
        slack_state = f"off: {slack_settings.why_off()}"
    else:
        slack = build_slack(runtime, slack_settings, kick=housekeeper.kick)
        slack.notifier.start()
        slack_state = f"on ({slack_settings.mode} mode, Web API {slack_settings.api_url})"
        if slack_settings.mode == "socket" and slack_settings.app_token:
            socket_handler = slack.socket_mode_handler(slack_settings.app_token)
            try:
                socket_handler.connect()
            except Exception as exc:  # Slack refused the token, or the WebSocket failed
                from slack_sdk.errors import SlackApiError

                reason = (
                    exc.response.get("error")
                    if isinstance(exc, SlackApiError)
                    else redact_text(str(exc).splitlines()[0])
                )
                print(
                    "runbook-bot cannot start: Slack Socket Mode did not connect: "
                    f"{reason}. SLACK_APP_TOKEN must "
                    "be the app-level token (xapp-...) with connections:write, and Socket Mode "
                    "enabled for the app",
                    flush=True,
                )
                return 2
    warmed = threading.Event()
    app = BotApp(runtime, slack=slack if slack_settings.mode == "http" else None, warm=warmed)
    app.alertmanager.on_accepted = alerts.wake.set
    incidents = IncidentFollower(runtime, pagerduty) if pagerduty is not None else None
    try:
        server = create_server(
            app,
            host=args.host,
            port=port,
            threads=args.threads,
            ident="runbook-bot",
            # Alertmanager keeps one connection alive per notification group: a burst of 100
            # groups held waitress's default 100 connections, and every new one (the kubelet's
            # probes, Prometheus, Slack) waited two minutes for them to time out
            # (bench/alertmanager_real_bench.py). Idle ones close after 30 s.
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=IDLE_TIMEOUT_S,
        )
    except OSError as exc:  # the port is taken (or the address is not ours): one line, no trace
        print(
            f"runbook-bot cannot start: cannot listen on {args.host}:{port}: {exc.strerror}",
            flush=True,
        )
        if socket_handler is not None:
            socket_handler.close()
        if slack is not None:
            Workers([slack.notifier]).stop_all(timeout=SHUTDOWN_JOIN_S)
        runtime.close()
        return 2
    workers = Workers([housekeeper, drills, alerts, readiness, readiness_notices, gitops])
    if incidents is not None:
        workers.add(incidents)
    workers.start_all()
    if slack is not None:
        workers.add(slack.notifier)  # started above, before Socket Mode connects: stopped here
    threading.Thread(target=preload, args=(warmed,), name="preload", daemon=True).start()
    # Acks are short and I/O bound; a running plan or rollout watch is CPU bound. A shorter
    # switch interval than the default 5 ms lets the acks through (bench/README.md).
    sys.setswitchinterval(settings.switch_interval)
    log.info(
        "runbook-bot serving",
        host=args.host,
        port=port,
        config=runtime.config.describe(),
        state=settings.state_description,
        slack=slack_state,
        slack_commands=slack.commands if slack else [],
        alertmanager=app.alertmanager.describe(),
        pagerduty=pagerduty_settings.describe(),
        pagerduty_webhook=app.pagerduty.describe(),
    )

    def stop(_signum: int, _frame: Any) -> None:
        workers.request_stop()
        if socket_handler is not None:
            socket_handler.close()
        # The requests in flight finish first (waitress's own Ctrl-C path does the same): a
        # task thread ends each by writing to the wake-up pipe that close() shuts, and a
        # SIGTERM in between printed an EBADF traceback.
        server.task_dispatcher.shutdown()
        server.close()

    signal.signal(signal.SIGTERM, stop)
    print(
        f"runbook-bot listening on http://{args.host}:{port} "
        f"(config {runtime.config.describe()}, state {settings.state_description}, "
        f"slack {slack_state})",
        flush=True,
    )
    try:
        server.run()
    except (KeyboardInterrupt, OSError):
        pass
    finally:
        # The workers give up their leases (a successor need not wait for them to run out)
        # and stop using the store before it closes.
        workers.stop_all(timeout=SHUTDOWN_JOIN_S)
        runtime.close()
        if pagerduty is not None:
            pagerduty.close()
    return 0
