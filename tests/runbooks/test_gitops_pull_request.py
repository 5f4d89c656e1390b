"""The revert branch's pull request (issue 33's last item): optional, off by default.

Against the Kubernetes emulators, real Git repositories, the sandbox's reconciler and the
GitHub API emulator (``sandbox/github.py``). Oracles: the calls the GitHub emulator recorded,
git for the branch, the SQLite file read with sqlite3, the card and the incident's notes."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.incidents import IncidentFeed
from bot.slack.render import card_blocks
from runbooks.adapters.github import GitHubPulls
from runbooks.adapters.pagerduty import PagerDuty, PagerDutySettings
from runbooks.engine.background.outbox import OutboxFollower
from runbooks.engine.clock import FakeClock
from runbooks.engine.config.environments import PullRequestConfig
from runbooks.engine.config.loader import Config
from runbooks.engine.engine import Engine
from runbooks.engine.models import Execution, State
from runbooks.interfaces import InfrastructureError
from sandbox.github import GitHubEmulator
from sandbox.gitops import git
from sandbox.pagerduty import SANDBOX_API_TOKEN, SANDBOX_ROUTING_KEY
from tests.conftest import KubeSandbox
from tests.runbooks.conftest import live_engine
from tests.support.crash import CrashingStore, Killed
from tests.support.gitops import GitOpsWorld, gitops_world, with_pull_requests
from tests.support.kube_runs import actions, run
from tests.support.people import ALICE, BOB
from tests.support.secrets_corpus import CORPUS, leaks
from tests.support.state import everything_stored, stored

#: A token in a shape the redactor's patterns know (the corpus's GitHub app token) ...
CORPUS_TOKEN = next(p.secret for p in CORPUS if p.name == "github ghs_")
#: ... and one no pattern knows: only its registration keeps it out.
PLAIN_TOKEN = "pr-token-0f9e8d7c6b5a4f3e2d1c"
TOKEN_ENV = "RUNBOOK_BOT_TEST_PR_TOKEN"
REPOS = {"api-production": "acme/api-production", "api-staging": "acme/api-staging"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def world(kube: KubeSandbox, tmp_path: Path, clock: FakeClock) -> Iterator[GitOpsWorld]:
    with gitops_world(kube, tmp_path / "git", clock=clock.now) as running:
        yield running


@pytest.fixture(params=[CORPUS_TOKEN], ids=["corpus-token"])
def token(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    value = str(request.param)
    monkeypatch.setenv(TOKEN_ENV, value)
    return value


@pytest.fixture
def github(world: GitOpsWorld, token: str) -> Iterator[GitHubEmulator]:
    emulator = GitHubEmulator(
        repos={REPOS[name]: app.repo for name, app in world.apps.items()}, token=token
    ).start()
    yield emulator
    emulator.stop()


def _config(
    sandbox_config: Config,
    world: GitOpsWorld,
    github: GitHubEmulator,
    *,
    token_env: str = TOKEN_ENV,
    apps: tuple[str, ...] = tuple(REPOS),
) -> Config:
    wanted = PullRequestConfig(
        api_url=github.url,
        repositories={world.apps[name].url: REPOS[name] for name in apps},
        token_env=token_env,
        run_link="https://runbook-bot.example.com/runs/{run}",
        timeout=5.0,
    )
    return with_pull_requests(sandbox_config, wanted, "production", "staging")


@pytest.fixture
def engine(
    world: GitOpsWorld,
    github: GitHubEmulator,
    *,
    kube: KubeSandbox,
    sandbox_config: Config,
    tmp_path: Path,
    clock: FakeClock,
    health: Any,
) -> Iterator[Engine]:
    config = _config(sandbox_config, world, github)
    with live_engine(
        config, tmp_path / "engine", clock=clock, kubeconfig=str(kube.kubeconfig)
    ) as built:
        yield built


@pytest.fixture
def pagerduty(pagerduty_emulator: Any) -> Iterator[PagerDuty]:
    client = PagerDuty(
        PagerDutySettings(
            api_token=SANDBOX_API_TOKEN,
            routing_key=SANDBOX_ROUTING_KEY,
            api_url=pagerduty_emulator.url,
            events_url=pagerduty_emulator.url,
            ca_bundle=str(pagerduty_emulator.ca_path),
        )
    )
    yield client
    client.close()


def _branch_head(world: GitOpsWorld, app: str, branch: str) -> str:
    return git("--git-dir", str(world.apps[app].repo), "rev-parse", f"refs/heads/{branch}")


def _revert(done: Execution) -> list[str]:
    (step,) = [s for s in done.steps if s.kind == "gitops.revert"]
    return list(step.output)


def _stored_text(tmp_path: Path) -> str:
    env = {"RUNBOOK_BOT_STATE": str(tmp_path / "engine" / "state.db")}
    return "\n".join([*everything_stored(env), *stored(env, "SELECT doc FROM executions")])


def test_a_rollback_opens_one_pull_request_of_the_revert_branch_into_the_tracked_branch(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    engine: Engine,
    github: GitHubEmulator,
    token: str,
    clock: FakeClock,
    tmp_path: Path,
    pagerduty: PagerDuty,
    pagerduty_emulator: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    prepared = engine.prepare("rollback", {"environment": "production"}, actor=ALICE)
    (revert,) = [s for s in prepared.plan.steps if s["kind"] == "gitops.revert"]
    assert (
        "then open a pull request into main in acme/api-production (GitHub)"
        in (revert["description"])
    )
    assert github.state.calls == []  # planning opens nothing
    incident = pagerduty_emulator.open_incident("api 5xx above 5 %")["id"]
    execution = engine.submit(prepared, actor=ALICE, incident=incident)
    engine.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
    done = engine.start(execution.id, actor=ALICE)
    assert done.state == State.SUCCEEDED, done.error
    branch = f"runbook-bot/revert-{done.id}"

    # The emulator's record: exactly one creation (two regions, one repository), the revert
    # branch into the tracked branch, with the token.
    (created,) = github.state.creations()
    assert created["path"] == "/repos/acme/api-production/pulls"
    assert (created["body"]["head"], created["body"]["base"]) == (branch, "main")
    assert created["authorization"] == f"Bearer {token}"
    assert all(c["authorization"] == f"Bearer {token}" for c in github.state.calls)
    title, body = created["body"]["title"], created["body"]["body"]
    assert done.id in title and incident in title
    assert "app-api:1.4.1" in title and "from app-api:1.4.2" in title
    assert f"https://runbook-bot.example.com/runs/{done.id}" in body
    # git: the branch the pull request names is the one pushed.
    (pull,) = github.state.pulls
    assert pull["head"]["ref"] == branch
    assert len(_branch_head(world, "api-production", branch).strip()) == 40

    # The URL in the step's output, the audit record, the card and the incident's note.
    url = pull["html_url"]
    assert url == "https://github.sandbox.local/acme/api-production/pull/1"
    output = _revert(done)
    assert output[0].startswith(f"pushed branch {branch}")
    assert output[1] == f"pull request opened: {url} (#1, {branch} into main)"
    (reverted,) = [
        r
        for r in engine.audit.export()
        if r.get("execution_id") == done.id and r["action"] == "gitops.reverted"
    ]
    assert any(url in line for line in reverted["detail"]["output"])
    card = json.dumps(card_blocks(engine.get(done.id), banner="production", now=clock.now()))
    assert url in card
    notes = IncidentFeed(SimpleNamespace(engine=engine), pagerduty)  # type: ignore[arg-type]
    outbox = OutboxFollower(engine.store, engine.clock, notes, name="pagerduty", owner="test")
    assert outbox.lead()
    outbox.pass_once()
    texts = [n["content"] for n in pagerduty_emulator.notes(incident)]
    finished = next(t for t in texts if t.startswith("Finished:"))
    assert url in finished

    # The token went to GitHub only: not in the store, the audit, the card, the notes, logs.
    everywhere = "\n".join(
        [_stored_text(tmp_path), card, *texts, caplog.text, json.dumps(list(engine.audit.export()))]
    )
    assert leaks(everywhere) == []
    assert token not in everywhere


def test_pull_requests_are_off_by_default_and_then_nothing_calls_the_api(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    github: GitHubEmulator,
    sandbox_config: Config,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    assert all(
        env.gitops.pull_request is None for env in sandbox_config.environments.environments.values()
    )
    with live_engine(
        sandbox_config, tmp_path / "off", clock=clock, kubeconfig=str(kube.kubeconfig)
    ) as engine:
        done = run(engine, "rollback", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    branch = f"runbook-bot/revert-{done.id}"
    assert _branch_head(world, "api-staging", branch).strip()
    assert not any("pull request" in line for line in _revert(done))
    assert "pull request" not in json.dumps(done.plan.steps)
    assert github.state.calls == []


@pytest.mark.parametrize("token", [PLAIN_TOKEN], indirect=True, ids=["plain-token"])
def test_the_api_failing_leaves_the_rollback_done_and_says_why_redacted(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    engine: Engine,
    github: GitHubEmulator,
    token: str,
    tmp_path: Path,
) -> None:
    # A proxy that answers 502 and echoes the token back, bare (no "Bearer" for a pattern to
    # catch: only the token's registration with the redactor keeps it out).
    github.fail(status=502, message=f"Bad gateway (upstream saw {token})", count=99)
    done = run(engine, "rollback", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    branch = f"runbook-bot/revert-{done.id}"
    assert _branch_head(world, "api-staging", branch).strip()  # pushed all the same
    assert github.state.pulls == [] and github.state.calls != []
    output = _revert(done)
    assert output[0].startswith(f"pushed branch {branch}")
    why = output[1]
    assert why.startswith("pull request NOT opened in acme/api-staging: GitHub refused GET ")
    assert "(502): Bad gateway (upstream saw " in why
    assert f"branch {branch} is pushed: open one into main by hand" in why
    assert token not in why
    assert token not in _stored_text(tmp_path)
    assert "gitops.reverted" in actions(engine, done.id)


@pytest.mark.parametrize("token", [PLAIN_TOKEN], indirect=True, ids=["plain-token"])
def test_a_wrong_token_or_an_unset_variable_is_said_in_the_note_and_the_rollback_stands(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    engine: Engine,
    github: GitHubEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "not-the-token-at-all-123456")
    done = run(engine, "rollback", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    assert "GitHub refused GET" in _revert(done)[1]
    assert (
        "(401): Bad credentials (the token is not valid (gitops.pull_request.token_env))"
        in (_revert(done)[1])
    )
    monkeypatch.delenv(TOKEN_ENV)
    again = run(engine, "rollback", environment="production")
    assert again.state == State.SUCCEEDED, again.error
    assert (
        f"production: gitops.pull_request.token_env names ${TOKEN_ENV}, which is not set"
        in _revert(again)[1]
    )
    assert github.state.pulls == []


def test_a_resumed_run_finds_the_open_pull_request_instead_of_opening_another(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    github: GitHubEmulator,
    sandbox_config: Config,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    config = _config(sandbox_config, world, github)
    store = CrashingStore(
        tmp_path / "crash.db",
        # Dies on the write that shows the pull request's note: opened, not yet recorded.
        kill_when=lambda execution: any(
            line.startswith("pull request opened")
            for step in execution.steps
            for line in step.output
        ),
    )
    try:
        with live_engine(
            config, tmp_path / "dies", clock=clock, kubeconfig=str(kube.kubeconfig), store=store
        ) as dying:
            prepared = dying.prepare("rollback", {"environment": "staging"}, actor=ALICE)
            execution = dying.submit(prepared, actor=ALICE)
            dying.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
            with pytest.raises(Killed):
                dying.start(execution.id, actor=ALICE)
        assert len(github.state.creations()) == 1
        assert dying.get(execution.id).state == State.RUNNING
        clock.advance(60)  # past the dead process's lease
        with live_engine(
            config, tmp_path / "next", clock=clock, kubeconfig=str(kube.kubeconfig), store=store
        ) as successor:
            done = successor.resume(execution.id, actor=ALICE)
        assert done.state == State.SUCCEEDED, done.error
    finally:
        store.close()
    assert len(github.state.creations()) == 1  # found, not duplicated
    (pull,) = github.state.pulls
    branch = f"runbook-bot/revert-{execution.id}"
    assert pull["head"]["ref"] == branch
    output = _revert(done)
    assert output[0].startswith(f"branch {branch} already pushed")
    assert output[1] == f"pull request already open: {pull['html_url']} (#1, {branch} into main)"
    lookups = [c for c in github.state.calls if c["method"] == "GET"]
    assert [c["query"]["head"] for c in lookups] == [[f"acme:{branch}"]] * 2


def test_the_adapter_gives_up_on_an_api_that_never_answers() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host, port = silent.getsockname()
        pulls = GitHubPulls(f"http://{host}:{port}", PLAIN_TOKEN, timeout=0.5)
        with pytest.raises(InfrastructureError, match="did not answer GET") as error:
            pulls.open_pull_request(
                "acme/api", head="runbook-bot/revert-x", base="main", title="t", body="b"
            )
    assert PLAIN_TOKEN not in str(error.value)


def test_the_token_may_be_a_secrets_manager_reference(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    github: GitHubEmulator,
    token: str,
    aws: Any,
    sandbox_config: Config,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    name = f"gitops/pull-requests-{tmp_path.name}"  # resolved once per process: its own id
    aws.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps({"token": token}))
    config = _config(sandbox_config, world, github, token_env=f"aws-secretsmanager:{name}#token")
    with live_engine(
        config, tmp_path / "engine", clock=clock, kubeconfig=str(kube.kubeconfig)
    ) as engine:
        done = run(engine, "rollback", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    (created,) = github.state.creations()
    assert created["authorization"] == f"Bearer {token}"
    assert _revert(done)[1].startswith("pull request opened: https://github.sandbox.local/")
    assert leaks(_stored_text(tmp_path)) == []


def test_a_repository_not_listed_opens_none_and_the_plan_says_so(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    github: GitHubEmulator,
    sandbox_config: Config,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    config = _config(sandbox_config, world, github, apps=("api-production",))
    with live_engine(
        config, tmp_path / "engine", clock=clock, kubeconfig=str(kube.kubeconfig)
    ) as engine:
        prepared = engine.prepare("rollback", {"environment": "staging"}, actor=ALICE)
        assert any(
            n.startswith("no pull request for Flux Kustomization `api-staging`")
            and "is not in gitops.pull_request.repositories" in n
            for n in prepared.plan.notes
        ), prepared.plan.notes
        done = run(engine, "rollback", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    assert not any("pull request" in line for line in _revert(done))
    assert github.state.calls == []
