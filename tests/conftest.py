"""Shared fixtures: isolated state, the sandbox configuration, engines on a fake clock."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings as hypothesis_settings

from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import FakeClock
from runbooks.engine.config.loader import Config, load_config
from runbooks.engine.engine import Engine
from runbooks.engine.logs import configure_logging
from runbooks.engine.registry import Registry
from runbooks.engine.requesters.drills import drill_runs
from runbooks.engine.store.base import Store
from runbooks.engine.store.sqlite import SqliteStore
from tests.engine import world
from tests.support.monitoring import monitoring  # noqa: F401 - the session's real Prometheus

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AUDIT_KEY = "test-audit-key-0123456789abcdef"

hypothesis_settings.register_profile("ci", deadline=None, derandomize=True, max_examples=60)
hypothesis_settings.register_profile("dev", deadline=None, max_examples=100)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

#: Fixtures that start processes: a bot (``world``, ``bot``), the real Prometheus and
#: Alertmanager (``monitoring``), a whole sandbox (``sandbox_env``). A test that uses one is a
#: process journey and is marked ``slow`` here, so a new test is marked without anyone
#: remembering to; ``python3 dev.py test --fast`` leaves them out (docs/testing.md).
PROCESS_FIXTURES = frozenset({"world", "bot", "monitoring", "sandbox_env"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # The process journeys first: xdist hands tests out in this order (dev.py caps each hand-out
    # at a few tests), so the long ones, which mostly wait on processes and the wall clock,
    # start at once and the short ones fill the workers around them instead of a two-minute
    # journey starting last. Otherwise the order is pytest's.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


#: Process journeys by what they start: our front ends as processes (the CLI, invoke, the bot,
#: the sandbox) and the real servers and browser. Oracles that are not ours (kubectl, the AWS
#: CLI, mongosh, git, promtool, amtool) and helper interpreters may run in any test.
JOURNEY_PROGRAMS = frozenset(
    {"runbook", "invoke", "chromium", "chromium-headless-shell", "prometheus", "alertmanager"}
)
JOURNEY_MODULES = frozenset({"bot", "sandbox"})


def process_journey(argv: Any) -> str | None:
    """What ``argv`` starts if it is a process journey (``runbook``, ``python -m bot``), else
    None."""
    args = [argv] if isinstance(argv, (str, bytes, os.PathLike)) else list(argv)
    if not args:
        return None
    name = Path(os.fsdecode(args[0])).name
    if name in JOURNEY_PROGRAMS:
        return name
    if name.startswith("python") and len(args) > 2 and args[1] == "-m":
        module = str(args[2])
        if module.partition(".")[0] in JOURNEY_MODULES:
            return f"python -m {module}"
    return None


@pytest.fixture(autouse=True)
def _process_journeys_are_marked_slow(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail a test that starts a process journey without the ``slow`` marker: it would run in
    ``dev.py test --fast``, whose point is to leave them out (docs/testing.md)."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    started: list[str] = []
    popen_init = subprocess.Popen.__init__

    def recording_init(self: subprocess.Popen[Any], args: Any, *more: Any, **options: Any) -> None:
        journey = process_journey(args)
        if journey is not None:
            started.append(journey)
        popen_init(self, args, *more, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    yield
    assert not started, (
        f"this test starts {', '.join(sorted(set(started)))} as a process: a process journey, "
        "so mark it slow (pytestmark or @pytest.mark.slow; docs/testing.md)"
    )


@pytest.fixture(autouse=True)
def _log_stream() -> Iterator[io.StringIO]:
    """Send structured logs to a buffer per test (tests that read logs use ``log_stream``)."""
    stream = io.StringIO()
    configure_logging(stream)
    yield stream


@pytest.fixture
def log_stream(_log_stream: io.StringIO) -> io.StringIO:
    return _log_stream


@pytest.fixture(autouse=True)
def _reset_world() -> Iterator[None]:
    world.reset()
    yield
    world.reset()


@pytest.fixture(scope="session")
def sandbox_config() -> Config:
    return load_config(ROOT / "config")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "state.db")
    yield store
    store.close()


EngineFactory = Callable[..., Engine]


@pytest.fixture
def make_engine(
    sandbox_config: Config, clock: FakeClock, sqlite_store: SqliteStore, tmp_path: Path
) -> EngineFactory:
    """Build an engine over the test runbooks; keyword overrides for store, clock, registry."""

    def build(**overrides: Any) -> Engine:
        store: Store = overrides.pop("store", sqlite_store)
        engine_clock = overrides.pop("clock", clock)
        return Engine(
            config=overrides.pop("config", sandbox_config),
            store=store,
            registry=overrides.pop("registry", Registry(world.SPECS)),
            audit=AuditLog(store, AUDIT_KEY.encode(), engine_clock),
            clock=engine_clock,
            state_dir=tmp_path / "home",
            lease_ttl=overrides.pop("lease_ttl", 30.0),
            drill_runs=overrides.pop("drill_runs", drill_runs),
            **overrides,
        )

    return build


@pytest.fixture
def engine(make_engine: EngineFactory) -> Engine:
    return make_engine()


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running the real CLI against isolated state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK")}
    env.update(
        RUNBOOK_BOT_STATE=str(tmp_path / "state.db"),
        RUNBOOK_BOT_HOME=str(tmp_path / "home"),
        RUNBOOK_BOT_CONFIG=str(ROOT / "config"),
        RUNBOOK_BOT_LOG=str(tmp_path / "log.jsonl"),
        RUNBOOK_BOT_AUDIT_KEY=AUDIT_KEY,
        RUNBOOK_USER="alice",
        COLUMNS="200",
        XDG_CACHE_HOME=str(tmp_path / "cache"),  # the CLI's task table
        # Every configured context resolves (to nothing listening) unless a test brings the
        # emulators' kubeconfig: a missing context makes the bot unready and config.check fail.
        KUBECONFIG=str(unreachable_kubeconfig(tmp_path / "unreachable-kubeconfig")),
    )
    return env


def unreachable_kubeconfig(path: Path) -> Path:
    """A kubeconfig whose contexts (the sandbox's region names) point at a closed port."""
    contexts = ("us-east-1", "us-west-2")
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": c, "cluster": {"server": "https://127.0.0.1:9"}} for c in contexts
                ],
                "users": [{"name": "nobody", "user": {"token": "none"}}],
                "contexts": [
                    {"name": c, "context": {"cluster": c, "user": "nobody"}} for c in contexts
                ],
                "current-context": contexts[0],
            }
        )
    )
    return path


def run_cli(
    args: list[str], env: dict[str, str], *, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``runbook`` console script (stdin is not a terminal)."""
    return subprocess.run(
        [str(BIN / "runbook"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        input=stdin if stdin is not None else "",
        cwd=ROOT,
    )


# --------------------------------------------------------------------------- Kubernetes
KUBECTL = shutil.which("kubectl")


@dataclass
class KubeSandbox:
    """Two seeded emulators (us-east-1, us-west-2) and a kubeconfig naming both."""

    emulators: dict[str, Any]
    kubeconfig: Path
    cache_dir: Path

    def cluster(self, region: str = "us-east-1") -> Any:
        return self.emulators[region].cluster

    def kubectl(
        self, *args: str, region: str = "us-east-1", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        if KUBECTL is None:
            pytest.skip("kubectl is not installed on this machine (it is on the CI image)")
        return subprocess.run(
            [
                KUBECTL,
                "--kubeconfig",
                str(self.kubeconfig),
                "--context",
                region,
                "--cache-dir",
                str(self.cache_dir),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def hook(self, path: str, body: dict[str, Any], region: str = "us-east-1") -> Any:
        request = urllib.request.Request(  # noqa: S310 - the local emulator
            self.emulators[region].url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local
            return json.loads(response.read())


@pytest.fixture(scope="session")
def _seeded_clusters() -> dict[str, Any]:
    """Each region's seeded cluster, made once per session (worker) and never started: the
    ``kube`` fixture clones it (seeding cost 0.16 s of CPU a test)."""
    from sandbox.kube.emulator import Cluster
    from sandbox.kube.seed import seed

    return {
        region: seed(Cluster(region, pace=0.02), region) for region in ("us-east-1", "us-west-2")
    }


@pytest.fixture
def kube(tmp_path: Path, _seeded_clusters: dict[str, Any]) -> Iterator[KubeSandbox]:
    """Fresh seeded emulators per test (clones of the session's seeded clusters: their own
    objects, history and controllers), on free ports; the controller steps every 20 ms."""
    from sandbox.kube.emulator import KubeEmulator, kubeconfig

    emulators = {
        region: KubeEmulator(seeded.clone()).start() for region, seeded in _seeded_clusters.items()
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig({r: e.url for r, e in emulators.items()})))
    yield KubeSandbox(emulators, path, tmp_path / "kube-cache")
    for emulator in emulators.values():
        emulator.stop()


# --------------------------------------------------------------------------------- AWS
AWS_CLI = BIN / "aws"


@pytest.fixture(scope="session")
def aws_server() -> Iterator[Any]:
    """One moto server for the session; each test resets and reseeds it (``aws``)."""
    from sandbox.aws import AwsSandbox

    server = AwsSandbox().start()
    yield server
    server.stop()


@dataclass
class AwsWorld:
    server: Any
    env: dict[str, str]
    _driver: Any = None

    def client(self, service: str, region: str = "us-east-1") -> Any:
        return self.server.client(service, region)

    def group(self, name: str, region: str = "us-east-1") -> Any:
        """An Auto Scaling group as the AWS CLI describes it."""
        found = self.cli(
            "autoscaling",
            "describe-auto-scaling-groups",
            "--auto-scaling-group-names",
            name,
            region=region,
        )
        return found["AutoScalingGroups"][0]

    def cli(self, *args: str, region: str = "us-east-1") -> Any:
        """The AWS CLI (PyPI awscli): an independent oracle reading the same server, its
        driver run in this process (``tests/support/aws_cli.py``), made once per test: 15 ms
        a call instead of an interpreter start's 0.4-1 s. ``cli_process`` runs the ``aws``
        console script itself."""
        from tests.support.aws_cli import aws_cli, new_driver

        if self._driver is None:
            self._driver = new_driver()  # reads the environment the fixture set
        return aws_cli(*args, region=region, driver=self._driver)

    def cli_process(self, *args: str, region: str = "us-east-1") -> Any:
        """``cli`` through the ``aws`` console script, as a person types it."""
        result = subprocess.run(
            [str(AWS_CLI), "--region", region, "--output", "json", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else None  # no output: None


#: The session's moto server -> its call count right after the last seed.
_AWS_SEEDED: dict[int, int] = {}


@pytest.fixture
def aws(aws_server: Any, monkeypatch: pytest.MonkeyPatch) -> AwsWorld:
    """The seeded sandbox AWS; boto3 in this process and child processes point at it."""
    from sandbox.aws import CREDENTIALS

    # Reseeded only where the last test changed it: the write log (every call through moto's
    # HTTP front, from this process and child processes alike, with the service it was
    # signed for) says what may have changed since the last seed. Reset and seed of
    # everything cost 0.6-1.6 s a test; a test that wrote only backups costs a tenth of that.
    seeded = _AWS_SEEDED.get(id(aws_server))
    if seeded is None:
        aws_server.reset()
        aws_server.seed()
    if seeded is None or aws_server.reseed(seeded):
        _AWS_SEEDED[id(aws_server)] = len(aws_server.calls)
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": aws_server.url, "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return AwsWorld(aws_server, env)


# ---------------------------------------------------------------------------- PagerDuty
@pytest.fixture(scope="session")
def pagerduty_ca() -> Any:
    """One throwaway certificate authority (trustme) for every PagerDuty emulator of the
    session (of the xdist worker): making one per test was the cost, not the server."""
    import trustme

    return trustme.CA()


@pytest.fixture
def pagerduty_emulator(tmp_path: Path, pagerduty_ca: Any) -> Iterator[Any]:
    """The sandbox's PagerDuty over TLS (its CA at ``.ca_path``, the session's), recording what
    it receives: a new server and state per test, only the CA is shared."""
    from sandbox.pagerduty import PagerDutyEmulator

    running = PagerDutyEmulator(tmp_path / "pagerduty", ca=pagerduty_ca).start()
    yield running
    running.stop()


# ---------------------------------------------------------------------------- database
@pytest.fixture
def production_backup(
    aws: AwsWorld, sandbox_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Production's seeded database and a restore scratch (the sandbox's wire servers), with
    last night's backup in the bucket: what the monthly restore drill needs. Yields the
    environment a bot or CLI process needs to reach them (AWS included)."""
    from tests.runbooks.conftest import live_engine
    from tests.support.backups import Databases, take_backup

    found = Databases()
    env = {"PRODUCTION_MONGODB_URI": found.source.uri, "RESTORE_MONGODB_URI": found.scratch.uri}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        with live_engine(sandbox_config, tmp_path / "backup") as engine:
            take_backup(engine, "nightly/2026-12-01T00-00-00Z")
        yield {**aws.env, **env}
    finally:
        found.stop()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The sandbox's Atlas cluster: Admin API emulator + scripted wire-protocol server, with
    the environment variables the production configuration reads."""
    from sandbox import atlas

    state = atlas.ClusterState(election_delay=0.2)
    api = atlas.AtlasEmulator(state).start()
    wire = atlas.WireDatabase(state).start()
    for key, value in {
        "PRODUCTION_MONGODB_URI": wire.uri,
        "ATLAS_API_URL": api.url,
        "ATLAS_PUBLIC_KEY": atlas.PUBLIC_KEY,
        "ATLAS_PRIVATE_KEY": atlas.PRIVATE_KEY,
    }.items():
        monkeypatch.setenv(key, value)
    yield state
    api.stop()
    wire.stop()


@pytest.fixture
def health(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Per-region /health of the sandbox (``health.fail(region)`` makes one answer 503)."""
    from sandbox.health import HealthServer

    server = HealthServer().start()
    monkeypatch.setenv("RUNBOOK_BOT_SANDBOX_HEALTH", server.url)
    monkeypatch.setenv("RUNBOOK_BOT_SANDBOX_PROMETHEUS", server.url)  # its query emulator
    yield server
    server.stop()
