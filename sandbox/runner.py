"""Run the whole sandbox in the foreground: ``python -m sandbox up [--bot]``.

Starts a Kubernetes API emulator per region, the Slack Web API emulator and a seeded moto
server (AWS) on free ports,
writes a kubeconfig with contexts ``us-east-1`` and ``us-west-2`` and ``<state dir>/sandbox/env``
(``export`` lines the default configuration reads: ``KUBECONFIG``, ``SLACK_*``,
``AWS_ENDPOINT_URL`` and test credentials), and removes
the env file on exit. With ``--bot`` it also runs ``python -m bot serve`` with that environment
and stops it on Ctrl-C or SIGTERM.

``python -m sandbox slack --as alice "/rollback production"`` types a command in the sandbox
workspace and prints what the bot answered; ``python -m sandbox click --as bob Approve``
presses the newest button with that label that bob can see; ``channel``, ``incident`` and
``fault`` are in ``sandbox/tools.py``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from runbooks.engine import DEFAULT_PORT, RunbookError, Settings, bot_port, load_settings
from sandbox import appdata
from sandbox import atlas as atlas_sandbox
from sandbox import monitoring as sandbox_monitoring
from sandbox.aws import CREDENTIALS, AwsSandbox
from sandbox.gitops import GitOpsReconciler, seed_gitops
from sandbox.health import HealthServer
from sandbox.kube.emulator import Cluster, KubeEmulator, kubeconfig
from sandbox.kube.seed import LAYOUT, seed
from sandbox.mongo import MongoServer
from sandbox.pagerduty import PagerDutyEmulator
from sandbox.slack import (
    SANDBOX_BOT_TOKEN,
    SANDBOX_SIGNING_SECRET,
    SlackEmulator,
)


def start_emulators(*, pace: float = 0.2, ready_after: float = 1.0) -> dict[str, KubeEmulator]:
    """One seeded emulator per region (rollouts take a few seconds, like a small cluster)."""
    return {
        region: KubeEmulator(
            seed(Cluster(region, pace=pace, ready_after=ready_after), region)
        ).start()
        for region in LAYOUT
    }


def start_databases(
    production: atlas_sandbox.WireDatabase, rehearsal: atlas_sandbox.WireDatabase
) -> dict[str, MongoServer]:
    """The MongoDB wire servers by the variable naming their URI: the production cluster
    (also DR's topology), staging's, rehearsal's (a two-region Atlas cluster of its own), the
    scratch cluster dump restore tests restore into, and rehearsal's scratch cluster (its
    Atlas restore jobs wipe it, so it is its own); the application's collections seeded in
    each environment's."""
    servers = {
        "PRODUCTION_MONGODB_URI": production,
        "STAGING_MONGODB_URI": MongoServer(name="staging").start(),
        "REHEARSAL_MONGODB_URI": rehearsal,
        "RESTORE_MONGODB_URI": MongoServer(name="restore-scratch").start(),
        "REHEARSAL_SCRATCH_MONGODB_URI": MongoServer(name=REHEARSAL_SCRATCH).start(),
    }
    appdata.seed(servers["PRODUCTION_MONGODB_URI"], "production")
    appdata.seed(servers["STAGING_MONGODB_URI"], "staging")
    appdata.seed(servers["REHEARSAL_MONGODB_URI"], "rehearsal")
    return servers


#: The Atlas cluster rehearsal's restore tests restore into (tagged as scratch).
REHEARSAL_SCRATCH = "rehearsal-scratch"


def start_cloud_backups(
    production: atlas_sandbox.WireDatabase,
    rehearsal: atlas_sandbox.WireDatabase,
    databases: dict[str, MongoServer],
) -> list[atlas_sandbox.AtlasBackups]:
    """Atlas cloud backups of production and rehearsal, one snapshot of each now, each
    restorable into its own scratch cluster (tagged as scratch); both wire servers record
    their writes from the snapshot on, so point-in-time restores replay them. Rehearsal's
    backups are these snapshots (``mongodb.backups: atlas``); production's are dumps, and
    its snapshots serve tests that switch it to ``atlas``."""
    found = []
    for source, target, variable in (
        (production, "restore-scratch", "RESTORE_MONGODB_URI"),
        (rehearsal, REHEARSAL_SCRATCH, "REHEARSAL_SCRATCH_MONGODB_URI"),
    ):
        cloud = atlas_sandbox.AtlasBackups(
            source, targets={target: (databases[variable], [atlas_sandbox.SCRATCH_TAG])}
        )
        source.record_writes()
        cloud.take_snapshot()
        found.append(cloud)
    return found


def seed_backups(
    settings: Settings, aws: AwsSandbox, databases: dict[str, MongoServer]
) -> list[str]:
    """One backup of each environment's seeded data in its bucket, taken by the same code
    as ``restore.backup`` (so ``restore.test`` works at once); what was written."""
    from runbooks.adapters.aws import AwsAdapter
    from runbooks.adapters.mongo_data import MongoData
    from runbooks.engine import load_config
    from runbooks.kit import backups

    os.environ.update(CREDENTIALS)
    for variable, server in databases.items():
        os.environ[variable] = server.uri
    config = load_config(settings.config_dir)
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime())
    written = []
    for name, env in config.environments.environments.items():
        if env.mongodb is None or env.backup_bucket is None:
            continue
        if env.mongodb.uri_env not in databases:
            continue
        data = MongoData(env.mongodb.uri_env, timeout=10, label=f"{name} database")
        try:
            manifest = backups.dump(
                data,
                AwsAdapter(env.primary_region, endpoint_url=aws.url),
                bucket=env.backup_bucket,
                prefix=f"nightly/{stamp}",
                database=env.mongodb.database,
                environment=name,
                timestamp_field=env.mongodb.timestamp_field,
                clock_now=time.time,
            )
        finally:
            data.close()
        total = sum(c["count"] for c in manifest["collections"].values())
        written.append(
            f"backup of {name}: s3://{env.backup_bucket}/nightly/{stamp}/ ({total} documents)"
        )
    return written


def start_monitoring(
    directory: Path, settings: Settings, health: HealthServer, *, bot: int | None
) -> sandbox_monitoring.RealMonitoring | None:
    """The real Prometheus and Alertmanager when installed (said in the log), else None: the
    health server's emulator answers the queries."""
    from runbooks.engine import load_config

    where = directory / "monitoring"
    shutil.rmtree(where, ignore_errors=True)  # a fresh TSDB each run
    try:
        monitoring = sandbox_monitoring.start(
            where,
            load_config(settings.config_dir),
            health,
            bot=f"127.0.0.1:{bot}" if bot is not None else None,
            token=SANDBOX_ALERTMANAGER_TOKEN,
        )
    except RuntimeError as exc:
        print(f"prometheus: the real server did not start ({exc}); using the emulator", flush=True)
        return None
    if monitoring is None:
        print(
            f"prometheus: the emulator at {health.url} (no prometheus/alertmanager binaries: "
            "apt-get install prometheus prometheus-alertmanager for the real ones)",
            flush=True,
        )
        return None
    print(monitoring.described, flush=True)
    if not sandbox_monitoring.wait_scraped(monitoring):
        print("prometheus: the application's rates are not readable yet", flush=True)
    return monitoring


def write_env(
    directory: Path,
    emulators: dict[str, KubeEmulator],
    slack: SlackEmulator | None = None,
    *,
    aws: AwsSandbox | None = None,
    database: tuple[atlas_sandbox.AtlasEmulator, atlas_sandbox.WireDatabase] | None = None,
    databases: dict[str, MongoServer] | None = None,
    health: HealthServer | None = None,
    pagerduty: PagerDutyEmulator | None = None,
    bot_port: int = DEFAULT_PORT,
    prometheus_url: str | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "kubeconfig"
    config_path.write_text(yaml.safe_dump(kubeconfig({r: e.url for r, e in emulators.items()})))
    env_path = directory / "env"
    lines = [
        "# written by `invoke sandbox.up`; removed when it stops",
        f"export KUBECONFIG={shlex.quote(str(config_path))}",
    ]
    if slack is not None:
        lines += [
            f"export SLACK_API_URL={shlex.quote(slack.api_url)}",
            # With the AWS sandbox up, the bot token comes from its Secrets Manager, as in a
            # real installation (the signing secret stays plain: `sandbox.slack` signs with it).
            "export SLACK_BOT_TOKEN="
            + (
                "aws-secretsmanager:runbook-bot/slack#bot_token"
                if aws is not None
                else SANDBOX_BOT_TOKEN
            ),
            f"export SLACK_SIGNING_SECRET={SANDBOX_SIGNING_SECRET}",
            f"export RUNBOOK_BOT_SANDBOX_SLACK={shlex.quote(slack.url)}",
            f"export RUNBOOK_BOT_URL=http://127.0.0.1:{bot_port}",
        ]
    if aws is not None:
        lines += [
            f"export AWS_ENDPOINT_URL={shlex.quote(aws.url)}",
            *(f"export {key}={value}" for key, value in CREDENTIALS.items()),
            "export AWS_DEFAULT_REGION=us-east-1",
        ]
    if database is not None:
        api, wire = database
        lines += [
            f"export PRODUCTION_MONGODB_URI={shlex.quote(wire.uri)}",
            f"export ATLAS_API_URL={shlex.quote(api.url)}",
            f"export ATLAS_PUBLIC_KEY={atlas_sandbox.PUBLIC_KEY}",
            f"export ATLAS_PRIVATE_KEY={atlas_sandbox.PRIVATE_KEY}",
        ]
    for variable, server in (databases or {}).items():
        lines.append(f"export {variable}={shlex.quote(server.uri)}")
    if pagerduty is not None:
        from sandbox import pagerduty as pd

        lines += [
            f"export PAGERDUTY_API_URL={shlex.quote(pagerduty.url)}",
            f"export PAGERDUTY_EVENTS_URL={shlex.quote(pagerduty.url)}",
            f"export PAGERDUTY_CA_BUNDLE={shlex.quote(str(pagerduty.ca_path))}",
            f"export PAGERDUTY_API_TOKEN={pd.SANDBOX_API_TOKEN}",
            f"export PAGERDUTY_ROUTING_KEY={pd.SANDBOX_ROUTING_KEY}",
            f"export PAGERDUTY_WEBHOOK_SECRETS={pd.SANDBOX_WEBHOOK_SECRET}",
            "export PAGERDUTY_FROM=dave@example.com",
        ]
    # Alertmanager's receiver authenticates with this (http_config.authorization).
    lines.append(f"export ALERTMANAGER_WEBHOOK_TOKEN={SANDBOX_ALERTMANAGER_TOKEN}")
    if health is not None:
        lines.append(f"export RUNBOOK_BOT_SANDBOX_HEALTH={shlex.quote(health.url)}")
    # The real Prometheus where the sandbox runs one, else the emulator beside /health.
    prometheus = prometheus_url or (health.url if health is not None else None)
    if prometheus is not None:
        lines.append(f"export RUNBOOK_BOT_SANDBOX_PROMETHEUS={shlex.quote(prometheus)}")
    partial = env_path.with_name(env_path.name + ".partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(env_path)  # a reader sees the whole file or none
    return env_path


SANDBOX_ALERTMANAGER_TOKEN = "sandbox-alertmanager-token"  # noqa: S105 - the sandbox's own


def sandbox_running(state_dir: Path) -> str | None:
    """The sandbox that runs on this state now (its pid file names a live process), if any."""
    pid_file = state_dir / "sandbox" / "pid"
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return None
    except PermissionError:
        return "the sandbox (a process of another user)"
    return f"the sandbox (pid {pid})"


def running_on(state_dir: Path, state_url: str) -> list[str]:
    """What is using this state now: a sandbox (its pid file names a live process) or a bot
    (it holds the store's ``supervisor`` leader lease)."""
    found = []
    sandbox = sandbox_running(state_dir)
    if sandbox is not None:
        found.append(sandbox)
    database = Path(state_url) if "://" not in state_url else None
    if database is not None and database.exists():
        from runbooks.engine import LeaderLease, open_store
        from runbooks.engine.clock import SystemClock

        store = open_store(str(database))
        try:
            leader = LeaderLease(store, "supervisor", "reset", SystemClock()).current()
        finally:
            store.close()
        if leader is not None and leader.until > time.time():
            found.append(f"a bot ({leader.owner})")
    return found


def reset(state_dir: Path, database: Path, *, stamp: str) -> tuple[list[Path], list[Path]]:
    """Set the sandbox's state store aside and remove its emulator files (executions would
    point at objects that no longer exist once the emulators start from the seed again).

    The store (the SQLite file in use) and its audit log are kept beside it as
    ``<name>.<stamp>`` (with its WAL files): a reset never loses an audit record. Returns
    (kept copies, removed files).
    """
    kept, removed = [], []
    for suffix in ("", "-wal", "-shm"):
        path = database.with_name(database.name + suffix)
        if path.exists():
            copy = database.with_name(f"{database.name}.{stamp}{suffix}")
            path.rename(copy)
            kept.append(copy)
    for path in (state_dir / "sandbox" / "env", state_dir / "sandbox" / "kubeconfig"):
        if path.exists():
            path.unlink()
            removed.append(path)
    return kept, removed


def reset_command(settings: Settings, *, yes: bool) -> int:
    """``sandbox.reset``: refuse under a running sandbox or bot; ask unless --yes."""
    busy = running_on(settings.state_dir, settings.state_url)
    if busy:
        print(
            f"refusing to reset {settings.state_url}: {' and '.join(busy)} "
            "is running on it. Stop it first (Ctrl-C in its terminal).",
            file=sys.stderr,
        )
        return 2
    if not yes:
        if not sys.stdin.isatty():
            print("no terminal to confirm the reset on; pass --yes", file=sys.stderr)
            return 2
        answer = input(
            f"Set aside the state store {settings.state_url} (executions and the audit log, "
            "kept as a copy beside it) and remove the sandbox files? [y/N] "
        )
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing done")
            return 2
    if "://" in settings.state_url:
        print(
            f"the state store is {settings.state_description}, not a SQLite file: "
            "sandbox.reset sets aside only a local store",
            file=sys.stderr,
        )
        return 2
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept, removed = reset(settings.state_dir, Path(settings.state_url), stamp=stamp)
    for path in kept:
        print(f"kept {path}")
    for path in removed:
        print(f"removed {path}")
    return 0


def _tool(settings: Settings, args: argparse.Namespace) -> int:
    """``channel``, ``incident`` and ``fault``: exit 2 with the reason on bad input."""
    from sandbox import tools

    try:
        if args.command == "channel":
            return tools.channel(settings, args.channel)
        if args.command == "incident":
            return tools.incident(settings, args.title, service=args.service, urgency=args.urgency)
        return tools.fault(settings, args.kind, region=args.region, value=args.value, off=args.off)
    except tools.Refusal as exc:
        print(exc, file=sys.stderr)
        return tools.EXIT_REFUSED


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the sandbox until Ctrl-C")
    up.add_argument("--bot", action="store_true", help="also run the bot against it")
    up.add_argument("--port", type=int, default=None, help="the bot's port (with --bot)")
    reset_parser = sub.add_parser(
        "reset", help="set the default state store aside (kept as a copy) and remove sandbox files"
    )
    reset_parser.add_argument("--yes", action="store_true", help="do not ask")
    slack = sub.add_parser("slack", help="type a slash command in the sandbox workspace")
    slack.add_argument("--as", dest="user", required=True, help="person from policy.yaml")
    slack.add_argument("--channel", default="C0OPS", help="channel id (default C0OPS)")
    slack.add_argument("text", help='the command, e.g. "/rollback production"')
    click = sub.add_parser("click", help="press the newest button with this label")
    click.add_argument("--as", dest="user", required=True, help="person from policy.yaml")
    click.add_argument("--reason", default=None, help="reason for a Deny dialog")
    click.add_argument(
        "--execution", default=None, help="the card of this execution (rb-…), when several"
    )
    click.add_argument(
        "--card", type=int, default=None, help="the N-th card with the button (1: newest)"
    )
    click.add_argument("label", help="Confirm, Cancel, Approve or Deny")
    dms = sub.add_parser("dms", help="print the bot's direct messages to a person")
    dms.add_argument("--as", dest="user", required=True, help="person from policy.yaml")
    channel = sub.add_parser("channel", help="print what the bot posted in a Slack channel")
    channel.add_argument("channel", help="channel id, e.g. C0OPS")
    incident = sub.add_parser("incident", help="open an incident in the sandbox PagerDuty")
    incident.add_argument("title", help="the incident's title")
    incident.add_argument("--service", default="PSVCPROD", help="service id (default PSVCPROD)")
    incident.add_argument("--urgency", default="high", help="high (default) or low")
    fault = sub.add_parser("fault", help="turn a fault hook of the emulators on or off")
    fault.add_argument("kind", help="oom, broken-image, health, error-rate, ... (README)")
    fault.add_argument("--region", default="", help="one region (default: every region)")
    fault.add_argument("--value", default="", help="the fault's value (README)")
    fault.add_argument("--off", action="store_true", help="turn it off")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        port = bot_port(args.port) if args.command == "up" else DEFAULT_PORT
    except RunbookError as exc:
        print(f"runbook-bot cannot start: {exc.message}", file=sys.stderr, flush=True)
        return 2
    directory = settings.state_dir / "sandbox"
    if args.command in {"channel", "incident", "fault"}:
        return _tool(settings, args)
    if args.command == "reset":
        return reset_command(settings, yes=args.yes)
    if args.command in {"slack", "click", "dms"}:
        from sandbox.workspace import act

        return act(settings, args)
    other = sandbox_running(settings.state_dir)
    if other is not None:
        # A second sandbox on the same state would rewrite the first one's env file,
        # kubeconfig and Git repositories, and delete them when it stops.
        print(
            f"runbook-bot cannot start: {other} already runs on {settings.state_dir}; stop it "
            "first, or give this one its own state: RUNBOOK_BOT_HOME=/tmp/another "
            "python3 dev.py serve --port 3100",
            file=sys.stderr,
            flush=True,
        )
        return 2
    # From the first server on, SIGTERM and Ctrl-C only ask to stop: a signal during start-up
    # (seeding the backups takes seconds) ends in the same clean stop.
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emulators = start_emulators()
    # Only this world is GitOps-owned: the tests' seeded clusters (tests/conftest.py `kube`)
    # have no owner, and their GitOps tests seed it themselves (tests/support/gitops.py).
    clusters = {region: emulator.cluster for region, emulator in emulators.items()}
    gitops_apps = seed_gitops(clusters, directory / "git")
    reconciler = GitOpsReconciler(clusters).start()
    slack_emulator = SlackEmulator().start()
    aws = AwsSandbox().start().seed()
    cluster = atlas_sandbox.ClusterState()
    wire = atlas_sandbox.WireDatabase(cluster)
    wire.start()
    rehearsal = atlas_sandbox.ClusterState(name="rehearsal")
    rehearsal_wire = atlas_sandbox.WireDatabase(rehearsal)
    rehearsal_wire.start()
    databases = start_databases(wire, rehearsal_wire)
    cloud = start_cloud_backups(wire, rehearsal_wire, databases)
    api = atlas_sandbox.AtlasEmulator(cluster, backups=cloud, others=[rehearsal]).start()
    database = (api, wire)
    health = HealthServer().start()
    monitoring = start_monitoring(directory, settings, health, bot=port if args.bot else None)
    pagerduty = PagerDutyEmulator(directory).start()
    for line in seed_backups(settings, aws, databases):
        print(line, flush=True)
    # The env file is the sign a terminal may start: written once the backups are seeded (a
    # `restore.test` run the moment it appears finds them), and atomically.
    env_path = write_env(
        directory,
        emulators,
        slack_emulator,
        aws=aws,
        database=database,
        databases=databases,
        health=health,
        pagerduty=pagerduty,
        bot_port=port,
        prometheus_url=monitoring.prometheus.url if monitoring is not None else None,
    )
    (directory / "pid").write_text(str(os.getpid()))
    for region, emulator in emulators.items():
        print(f"kubernetes {region}: {emulator.url}", flush=True)
    for app in gitops_apps:
        tool = "Argo CD application" if app.tool == "argo" else "Flux Kustomization"
        print(
            f"gitops: {app.namespace} {app.deployment} owned by {tool} {app.name}, "
            f"repository {app.url} (reconciled every {reconciler.interval:g}s)",
            flush=True,
        )
    print(f"slack web api: {slack_emulator.api_url}", flush=True)
    print(f"aws (moto): {aws.url}", flush=True)
    print(f"atlas admin api: {database[0].url}", flush=True)
    print(f"pagerduty (TLS, CA {pagerduty.ca_path}): {pagerduty.url}", flush=True)
    for variable, server in databases.items():
        print(f"mongodb {server.name}: {server.uri} (${variable})", flush=True)
    print(f"sandbox ready: source {env_path}", flush=True)
    bot: subprocess.Popen[Any] | None = None
    try:
        if args.bot and not stop.is_set():
            env = {**os.environ, "KUBECONFIG": str(directory / "kubeconfig")}
            command = [sys.executable, "-m", "bot", "serve", "--port", str(port)]
            bot = subprocess.Popen(command, env=env)
        while not stop.wait(0.5):
            if bot is not None and bot.poll() is not None:
                print(f"the bot exited ({bot.returncode}); stopping the sandbox", flush=True)
                return bot.returncode or 1
    finally:
        if bot is not None and bot.poll() is None:
            bot.send_signal(signal.SIGTERM)
            try:
                bot.wait(timeout=15)
            except subprocess.TimeoutExpired:
                bot.kill()
        env_path.unlink(missing_ok=True)
        (directory / "pid").unlink(missing_ok=True)
        reconciler.stop()
        for emulator in emulators.values():
            emulator.stop()
        slack_emulator.stop()
        aws.stop()
        database[0].stop()
        # Each wire server takes up to a second to stop (its accept loop polls): side by side.
        stopping = [threading.Thread(target=s.stop, daemon=True) for s in databases.values()]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join(timeout=15)
        health.stop()
        if monitoring is not None:
            monitoring.stop()
        pagerduty.stop()
        print("sandbox stopped", flush=True)
    return 0
