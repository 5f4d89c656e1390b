"""A rollback that survives GitOps (issue 33), against the Kubernetes emulators, real Git
repositories, the sandbox's reconciler on the test's clock and the PagerDuty emulator.

Oracles: kubectl (images, the applications' sync policy), git (the revert branch, its one
commit), the PagerDuty emulator (what was paged), the audit log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.incidents import IncidentFeed
from bot.slack.render import card_blocks
from runbooks.adapters.pagerduty import PagerDuty, PagerDutySettings
from runbooks.engine.background.outbox import OutboxFollower
from runbooks.engine.clock import FakeClock
from runbooks.engine.config.loader import Config
from runbooks.engine.engine import Engine
from runbooks.engine.errors import Refused
from runbooks.engine.lifecycle.journal import CANCEL_POLL_S
from runbooks.engine.models import State
from runbooks.kit.gitops import GitOpsWatch
from sandbox.gitops import git, merge
from sandbox.kube.emulator import BY_PATH
from sandbox.pagerduty import SANDBOX_API_TOKEN, SANDBOX_ROUTING_KEY
from tests.conftest import KubeSandbox
from tests.runbooks.conftest import live_engine, started
from tests.support.gitops import GitOpsWorld, gitops_world
from tests.support.kube_runs import DEPLOY, actions, run
from tests.support.people import ALICE, BOB
from tests.support.waiting import wait_for
from tests.support.windows import _window

DAY = 86400.0
#: (environment, application, region where its deployment runs) per owner.
OWNERS = {
    "argo": ("production", "api-production", ("us-east-1", "us-west-2")),
    "flux": ("staging", "api-staging", ("us-east-1",)),
}
RELEASE_141 = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:1.4.1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def world(kube: KubeSandbox, tmp_path: Path, clock: FakeClock) -> Iterator[GitOpsWorld]:
    with gitops_world(kube, tmp_path / "git", clock=clock.now) as running:
        yield running


@pytest.fixture
def engine(
    world: GitOpsWorld,
    *,
    kube: KubeSandbox,
    sandbox_config: Config,
    tmp_path: Path,
    clock: FakeClock,
    health: Any,
) -> Iterator[Engine]:
    with live_engine(
        sandbox_config, tmp_path / "engine", clock=clock, kubeconfig=str(kube.kubeconfig)
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


def _watch(engine: Engine, pagerduty: PagerDuty) -> GitOpsWatch:
    def page(summary: str, key: str, details: dict[str, Any]) -> None:
        pagerduty.trigger(summary, key, details=details)

    return GitOpsWatch(engine, page=page)


def _image(kube: KubeSandbox, namespace: str, region: str = "us-east-1") -> str:
    done = kube.kubectl(
        "get",
        "deployment/api-deployment",
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
        region=region,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.rsplit("/", 1)[-1]


def _app(kube: KubeSandbox, kind: str, name: str, namespace: str, region: str = "us-east-1") -> Any:
    done = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json", region=region)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _argo_automated(kube: KubeSandbox, region: str) -> Any:
    return (
        _app(kube, "applications.argoproj.io", "api-production", "argocd", region)["spec"]
        .get("syncPolicy", {})
        .get("automated")
    )


def _sync_on(kube: KubeSandbox, owner: str, region: str) -> bool:
    """Automated sync as kubectl reads it: Argo's automated policy as seeded, Flux unsuspended;
    and no suspension annotation left behind."""
    if owner == "argo":
        app = _app(kube, "applications.argoproj.io", "api-production", "argocd", region)
        on = app["spec"].get("syncPolicy", {}).get("automated") == {"prune": True, "selfHeal": True}
    else:
        app = _app(kube, "kustomization", "api-staging", "flux-system", region)
        on = app["spec"]["suspend"] is False
    return on and "runbook-bot.io/suspended" not in app["metadata"].get("annotations", {})


def _revert_branches(world: GitOpsWorld, app: str) -> str:
    repo = str(world.apps[app].repo)
    return git("--git-dir", repo, "branch", "--list", "runbook-bot/*").strip()


def _commits(world: GitOpsWorld, app: str, branch: str) -> list[str]:
    repo = str(world.apps[app].repo)
    return git("--git-dir", repo, "log", "--format=%H", f"main..{branch}").split()


def _changed_lines(world: GitOpsWorld, app: str, branch: str) -> list[str]:
    repo = str(world.apps[app].repo)
    diff = git("--git-dir", repo, "diff", "--unified=0", f"main...{branch}")
    return [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_argo_owned_rollback_holds_reverts_in_git_and_resumes_only_after_merge_and_sync(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    engine: Engine,
    clock: FakeClock,
    pagerduty: PagerDuty,
    pagerduty_emulator: Any,
) -> None:
    prepared = engine.prepare("rollback", {"environment": "production"}, actor=ALICE)
    text = " ".join([*prepared.plan.notes, *(s["description"] for s in prepared.plan.steps)])
    # The interval the installation declares (argocd-cm: what the sandbox's reconciler does).
    assert (
        "owned by Argo CD application `api-production` (namespace argocd) (automated sync every "
        "3s (Argo CD's timeout.reconciliation)): the rollback alone would be reverted"
    ) in text
    assert "runbook-bot/revert-<this run's id>" in text  # no id before the run exists

    incident = pagerduty_emulator.open_incident("api 5xx above 5 %")["id"]
    execution = engine.submit(prepared, actor=ALICE, incident=incident)
    engine.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
    done = engine.start(execution.id, actor=ALICE)
    assert done.state == State.SUCCEEDED, done.error
    assert [s.kind for s in done.steps] == [
        "gitops.suspend",
        "gitops.suspend",
        "kube.undo",
        "kube.undo",
        "gitops.revert",
        "rollback.watch_signals",
    ]
    branch = f"runbook-bot/revert-{done.id}"
    assert branch in " ".join(done.steps[4].output)
    # The step as runs.show, the terminal and the thread read it names the branch too.
    assert f"push branch {branch} to" in engine.get(done.id).steps[4].description
    # The finished card names the real branch, in the step and in its output.
    card = json.dumps(card_blocks(engine.get(done.id), banner="production", now=clock.now()))
    assert f"push branch {branch} to" in card
    assert "<this run's id>" not in card
    for region in ("us-east-1", "us-west-2"):
        assert _argo_automated(kube, region) is None

    # The rolled-back image stays through three reconciler intervals (each one seen).
    for _ in range(3):
        world.next_pass("us-east-1", "api-production", clock.advance)
        world.next_pass("us-west-2", "api-production", clock.advance)
        for region in ("us-east-1", "us-west-2"):
            assert _image(kube, "production", region) == "app-api:1.4.1"

    # Git: one commit on the branch, changing exactly the image.
    assert len(_commits(world, "api-production", branch)) == 1
    assert [
        line.split("app-api:")[-1] for line in _changed_lines(world, "api-production", branch)
    ] == ["1.4.2", "1.4.1"]

    watch = _watch(engine, pagerduty)
    assert watch.tick().resumed == []  # Git still renders 1.4.2
    merge(world.apps["api-production"].repo, branch)
    # Merged, but the reconciler has not fetched it yet: still suspended.
    assert watch.tick().resumed == []
    assert _argo_automated(kube, "us-east-1") is None
    world.next_pass("us-east-1", "api-production", clock.advance)
    world.next_pass("us-west-2", "api-production", clock.advance)
    assert len(watch.tick().resumed) == 2
    for region in ("us-east-1", "us-west-2"):
        app = _app(kube, "applications.argoproj.io", "api-production", "argocd", region)
        assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
        assert "runbook-bot.io/suspended" not in app["metadata"].get("annotations", {})
    world.next_pass("us-east-1", "api-production", clock.advance)
    assert _image(kube, "production") == "app-api:1.4.1"  # Git and the cluster agree
    assert pagerduty_emulator.state.events == []

    # The incident's timeline names the branch to merge, then says sync is back.
    notes = IncidentFeed(SimpleNamespace(engine=engine), pagerduty)  # type: ignore[arg-type]
    outbox = OutboxFollower(engine.store, engine.clock, notes, name="pagerduty", owner="test")
    assert outbox.lead()
    outbox.pass_once()
    texts = [n["content"] for n in pagerduty_emulator.notes(incident)]
    requested = next(t for t in texts if t.startswith("Requested"))
    assert f"push branch {branch} to" in requested  # the plan, with this run's id
    assert not any("<this run's id>" in t for t in texts), texts
    finished = next(t for t in texts if t.startswith("Finished:"))
    assert f"pushed branch {branch}" in finished
    restored = [t for t in texts if t.startswith("automated sync of Argo CD application")]
    assert len(restored) == 2 and all("restored" in t for t in restored), texts

    recorded = actions(engine, done.id)
    assert recorded.count("gitops.suspended") == 2
    assert recorded.count("gitops.reverted") == 1
    assert recorded.count("gitops.resumed") == 2
    assert "gitops.expired" not in recorded


def test_argo_tracking_head_reverts_onto_the_branch_head_names(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine
) -> None:
    """``targetRevision: HEAD`` (Argo CD's default) tracks the repository's default branch:
    the plan finds the image there and the revert branch starts from it (before: git was
    asked for refs/heads/HEAD and the plan failed)."""
    repo = world.apps["api-production"].repo
    for region in ("us-east-1", "us-west-2"):
        patched = kube.kubectl(
            "patch", "applications.argoproj.io", "api-production", "-n", "argocd",
            "--type", "merge", "-p", '{"spec": {"source": {"targetRevision": "HEAD"}}}',
            region=region,
        )  # fmt: skip
        assert patched.returncode == 0, patched.stderr
    default = git("--git-dir", str(repo), "symbolic-ref", "--short", "HEAD").strip()
    prepared = engine.prepare("rollback", {"environment": "production"}, actor=ALICE)
    [revert] = [s for s in prepared.plan.steps if s["kind"] == "gitops.revert"]
    assert revert["args"]["base"] == default
    assert f"(from {default})" in revert["description"]


def test_argo_says_its_default_interval_where_the_installation_declares_none(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine
) -> None:
    # us-east-1: the bot may not read argocd-cm; us-west-2: there is none.
    kube.hook(
        "/_sandbox/forbid",
        {"rules": [{"group": "", "resource": "configmaps", "verb": "get"}]},
        region="us-east-1",
    )
    deleted = kube.kubectl("delete", "configmap", "argocd-cm", "-n", "argocd", region="us-west-2")
    assert deleted.returncode == 0, deleted.stderr
    prepared = engine.prepare("rollback", {"environment": "production"}, actor=ALICE)
    for region in ("us-east-1", "us-west-2"):
        assert any(
            n.startswith(f"{region}: ")
            and "(automated sync every 3m (Argo CD's default polling))" in n
            for n in prepared.plan.notes
        ), prepared.plan.notes


def test_argo_suspension_pages_once_at_the_limit_and_stays_suspended(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    engine: Engine,
    clock: FakeClock,
    pagerduty: PagerDuty,
    pagerduty_emulator: Any,
) -> None:
    done = run(engine, "rollback", environment="production")
    assert done.state == State.SUCCEEDED, done.error
    watch = _watch(engine, pagerduty)
    clock.advance(DAY - 60)
    assert watch.tick().expired == []
    assert pagerduty_emulator.state.events == []
    clock.advance(120)  # past the 24 h limit, Git still on 1.4.2
    assert watch.tick().expired != []
    assert watch.tick().expired == []  # once
    clock.advance(DAY)
    assert watch.tick().expired == []
    (event,) = pagerduty_emulator.state.events
    assert event["event_action"] == "trigger"
    assert f"runbook-bot/revert-{done.id}" in event["payload"]["summary"]
    assert "still suspended" in event["payload"]["summary"]
    for region in ("us-east-1", "us-west-2"):
        assert _argo_automated(kube, region) is None
        assert _image(kube, "production", region) == "app-api:1.4.1"
    assert actions(engine, done.id).count("gitops.expired") == 1


def test_flux_owned_rollback_suspends_reverts_and_resumes_after_merge(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine, clock: FakeClock, pagerduty: PagerDuty
) -> None:
    prepared = engine.prepare("rollback", {"environment": "staging"}, actor=ALICE)
    assert any(
        "owned by Flux Kustomization `api-staging` (namespace flux-system) (automated sync every "
        "3s): the rollback alone would be reverted" in n
        for n in prepared.plan.notes
    ), prepared.plan.notes
    done = run(engine, "rollback", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    kustomization = _app(kube, "kustomization", "api-staging", "flux-system")
    assert kustomization["spec"]["suspend"] is True
    assert done.id in kustomization["metadata"]["annotations"]["runbook-bot.io/suspended"]
    for _ in range(3):
        world.next_pass("us-east-1", "api-staging", clock.advance)
        assert _image(kube, "staging") == "app-api:1.4.1"
    branch = f"runbook-bot/revert-{done.id}"
    assert len(_commits(world, "api-staging", branch)) == 1
    watch = _watch(engine, pagerduty)
    assert watch.tick().resumed == []
    merge(world.apps["api-staging"].repo, branch)
    world.next_pass("us-east-1", "api-staging", clock.advance)
    assert watch.tick().resumed != []
    kustomization = _app(kube, "kustomization", "api-staging", "flux-system")
    assert kustomization["spec"]["suspend"] is False
    world.next_pass("us-east-1", "api-staging", clock.advance)
    assert _image(kube, "staging") == "app-api:1.4.1"
    recorded = actions(engine, done.id)
    assert {"gitops.suspended", "gitops.reverted", "gitops.resumed"} <= set(recorded)


def test_a_second_rollback_before_the_revert_is_merged_says_to_merge_it_first(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine
) -> None:
    """Git still declares the release the first run rolled back from until its branch is
    merged: the second plan names that run and branch (it said "no file declares app-api:1.4.1
    ... declare the image where the bot looks", which sent people to their manifests)."""
    done = run(engine, "rollback", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    branch = f"runbook-bot/revert-{done.id}"
    with pytest.raises(Refused) as refused:
        engine.prepare("rollback", {"environment": "staging"}, actor=ALICE)
    assert (
        f"Flux Kustomization `api-staging` (namespace flux-system) is still suspended by "
        f"{done.id}, whose revert {branch} is not merged yet"
    ) in refused.value.message
    assert (refused.value.hint or "").startswith("merge the pending revert branch first")


def test_a_failed_rollback_gives_sync_back_and_deletes_the_branch(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine
) -> None:
    deploy = kube.cluster("us-east-1").get(DEPLOY, "staging", "api-deployment")
    deploy["spec"]["progressDeadlineSeconds"] = 1
    kube.cluster("us-east-1").replace(DEPLOY, "staging", "api-deployment", deploy)
    kube.hook(
        "/_sandbox/broken",
        {"images": ["123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:1.4.1"]},
    )
    done = run(engine, "rollback", environment="staging")
    assert done.state == State.COMPENSATED, done.error
    kustomization = _app(kube, "kustomization", "api-staging", "flux-system")
    assert kustomization["spec"]["suspend"] is False
    assert "runbook-bot.io/suspended" not in kustomization["metadata"].get("annotations", {})
    assert (
        git(
            "--git-dir", str(world.apps["api-staging"].repo), "branch", "--list", "runbook-bot/*"
        ).strip()
        == ""
    )
    assert "gitops.suspended.undone" in actions(engine, done.id)


def test_an_unowned_deployment_rolls_back_as_before(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine
) -> None:
    done = run(engine, "rollback", environment="development")
    assert done.state == State.SUCCEEDED, done.error
    assert [s.kind for s in done.steps] == ["kube.undo"]
    assert not any("owned by" in n for n in done.plan.notes)
    assert _image(kube, "development") == "app-api:1.4.1"


# ``list``: the watch that gives sync back finds suspended applications by listing them; a
# bot that could suspend but not list would never resume nor page at the limit.
@pytest.mark.parametrize("verb", ["patch", "list"])
@pytest.mark.parametrize(
    ("owner", "group", "resource", "words"),
    [
        ("argo", "argoproj.io", "applications", "Argo CD application `api-production`"),
        (
            "flux",
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "Flux Kustomization `api-staging`",
        ),
    ],
)
def test_without_rbac_to_suspend_the_plan_refuses_and_break_glass_warns(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    engine: Engine,
    verb: str,
    owner: str,
    group: str,
    resource: str,
    words: str,
) -> None:
    environment, _, regions = OWNERS[owner]
    for region in regions:
        kube.hook(
            "/_sandbox/forbid",
            {"rules": [{"group": group, "resource": resource, "verb": verb}]},
            region=region,
        )
    with pytest.raises(Refused, match=f"may not suspend {words}"):
        engine.prepare("rollback", {"environment": environment}, actor=ALICE)
    assert engine.list() == []
    prepared = engine.prepare(
        "rollback", {"environment": environment}, actor=ALICE, break_glass=True
    )
    # Per region: the reconciler will revert the rollback within the interval it declares.
    for region in regions:
        assert any(
            n.startswith(f"{region}: WARNING (break-glass)")
            and words in n
            and "the reconciler WILL revert this rollback at its next sync (every 3s" in n
            for n in prepared.plan.notes
        ), prepared.plan.notes
    assert "gitops.suspend" not in [s["kind"] for s in prepared.plan.steps]
    assert "gitops.revert" in [s["kind"] for s in prepared.plan.steps]


def test_scaling_and_resources_plans_warn_that_the_reconciler_would_revert_them(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine
) -> None:
    scaled = engine.prepare(
        "scale.pods",
        {"environment": "production", "service": "api", "replicas": 5, "region": "us-east-1"},
        actor=ALICE,
    )
    assert any(
        "owned by Argo CD application `api-production`" in n
        and "the scaling alone would be reverted" in n
        for n in scaled.plan.notes
    ), scaled.plan.notes
    resized = engine.prepare(
        "maintenance.resources",
        {"environment": "staging", "service": "api", "cpu_limit": "3", "window": _window(900)},
        actor=ALICE,
    )
    assert any(
        "owned by Flux Kustomization `api-staging`" in n
        and "the resources change alone would be reverted" in n
        for n in resized.plan.notes
    ), resized.plan.notes
    plain = engine.prepare(
        "scale.pods", {"environment": "development", "service": "api", "replicas": 5}, actor=ALICE
    )
    assert not any("owned by" in n for n in plain.plan.notes)


def test_with_automated_sync_off_the_plans_say_nothing_reverts_the_change_until_a_sync(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine
) -> None:
    """The walkthrough: with the application's automated sync suspended, scale.pods said
    "(automated sync off): the scaling alone would be reverted", which is not what happens
    now; nothing reverts it until someone syncs or turns automated sync back on."""
    for resource, name, namespace, sync_off in (
        ("applications.argoproj.io", "api-production", "argocd", {"spec": {"syncPolicy": None}}),
        ("kustomizations.kustomize.toolkit.fluxcd.io", "api-staging", "flux-system",
         {"spec": {"suspend": True}}),
    ):  # fmt: skip
        patched = kube.kubectl(
            "patch", resource, name, "-n", namespace, "--type=merge", "-p", json.dumps(sync_off),
            region="us-east-1",
        )  # fmt: skip
        assert patched.returncode == 0, patched.stderr
    scaled = engine.prepare(
        "scale.pods",
        {"environment": "production", "service": "api", "replicas": 5, "region": "us-east-1"},
        actor=ALICE,
    )
    [warning] = [n for n in scaled.plan.notes if "owned by" in n]
    assert warning == (
        "WARNING: api-deployment is owned by Argo CD application `api-production` (namespace "
        "argocd) (automated sync off): nothing reverts the scaling while automated sync stays "
        f"off, but the next sync from {world.apps['api-production'].url} (main) would (a sync "
        "by hand, or automated sync turned back on); make the change in Git as well"
    )
    assert "alone would be reverted" not in warning
    resized = engine.prepare(
        "maintenance.resources",
        {"environment": "staging", "service": "api", "cpu_limit": "3", "window": _window(900)},
        actor=ALICE,
    )
    [warning] = [n for n in resized.plan.notes if "owned by" in n]
    assert "(automated sync off): nothing reverts the resources change while" in warning
    rolled = engine.prepare("rollback", {"environment": "production"}, actor=ALICE)
    owned = [n for n in rolled.plan.notes if "owned by" in n]
    assert [n.split(":")[0] for n in owned] == ["us-east-1", "us-west-2"]
    assert "(automated sync off): nothing reverts the rollback while" in owned[0]
    # Where automated sync is on, the reconciler does revert it, and the plan says so.
    assert "(automated sync every 3s" in owned[1]
    assert owned[1].endswith("the rollback alone would be reverted")


def test_flux_suspension_pages_once_at_the_limit_and_stays_suspended(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    engine: Engine,
    clock: FakeClock,
    pagerduty: PagerDuty,
    pagerduty_emulator: Any,
) -> None:
    done = run(engine, "rollback", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    watch = _watch(engine, pagerduty)
    clock.advance(DAY - 60)
    assert watch.tick().expired == []
    assert pagerduty_emulator.state.events == []
    clock.advance(120)  # past the 24 h limit, Git still on 1.4.2
    assert watch.tick().expired == ["api-staging (staging, us-east-1)"]
    world.next_pass("us-east-1", "api-staging", clock.advance)
    assert watch.tick().expired == []  # once
    clock.advance(DAY)
    assert watch.tick().expired == []
    (event,) = pagerduty_emulator.state.events
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == f"runbook-bot:gitops:api-staging:{done.id}"
    assert f"runbook-bot/revert-{done.id}" in event["payload"]["summary"]
    kustomization = _app(kube, "kustomization", "api-staging", "flux-system")
    assert kustomization["spec"]["suspend"] is True
    assert done.id in kustomization["metadata"]["annotations"]["runbook-bot.io/suspended"]
    assert _image(kube, "staging") == "app-api:1.4.1"  # the reconciler passed, applied nothing
    expired = [r for r in engine.audit.export() if r["action"] == "gitops.expired"]
    assert [(r["execution_id"], r["target"], r["outcome"]) for r in expired] == [
        (done.id, {"environment": "staging", "application": "api-staging"}, "paged")
    ]


@pytest.mark.parametrize("owner", ["argo", "flux"])
def test_a_cancel_during_the_rollback_gives_sync_back(
    kube: KubeSandbox, world: GitOpsWorld, *, engine: Engine, clock: FakeClock, owner: str
) -> None:
    environment, app, regions = OWNERS[owner]
    # 1.4.1's pods never become ready in us-east-1: its undo waits (for the image pull's
    # grace) until the cancel comes.
    kube.hook("/_sandbox/broken", {"images": [RELEASE_141]})
    prepared = engine.prepare("rollback", {"environment": environment}, actor=ALICE)
    execution = engine.submit(prepared, actor=ALICE)
    if execution.state == State.AWAITING_APPROVAL:
        engine.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
    undo = [s.kind for s in execution.steps].index("kube.undo")
    with started(engine, execution.id, actor=ALICE) as finished:
        wait_for(
            lambda: engine.get(execution.id).steps[undo].status.value == "running",
            what="the rollback's undo",
        )
        for region in regions:
            assert not _sync_on(kube, owner, region)  # suspended before the undo
        engine.cancel(execution.id, actor=ALICE, reason="rolling forward instead")
        clock.advance(CANCEL_POLL_S)  # the run looks for a cancel once per poll of its clock
    assert finished and finished[0].state == State.CANCELLED, finished[0].error
    for region in regions:
        assert _sync_on(kube, owner, region)
    assert _revert_branches(world, app) == ""  # the revert step never ran
    assert actions(engine, execution.id).count("gitops.suspended.undone") == len(regions)


@pytest.mark.parametrize("owner", ["argo", "flux"])
def test_a_failed_revert_undoes_the_rollback_and_gives_sync_back(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine, owner: str
) -> None:
    environment, app, regions = OWNERS[owner]
    # The repository refuses every push (a server-side hook, real git): the revert fails
    # after the rollback succeeded.
    hook = world.apps[app].repo / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch creation needs review' >&2\nexit 1\n")
    hook.chmod(0o755)
    done = run(engine, "rollback", environment=environment)
    assert done.state == State.COMPENSATED, done.error
    assert "branch creation needs review" in (done.error or "")
    for region in regions:
        assert _sync_on(kube, owner, region)
        assert _image(kube, environment, region) == "app-api:1.4.2"  # the undo was undone
    assert _revert_branches(world, app) == ""
    recorded = actions(engine, done.id)
    assert recorded.count("gitops.suspended.undone") == len(regions)
    assert "gitops.reverted" not in recorded


def test_the_audit_log_names_every_step_of_the_loop(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    engine: Engine,
    clock: FakeClock,
    pagerduty: PagerDuty,
) -> None:
    """Suspended, reverted, expired (the limit passed first), then resumed once the branch
    was merged and the reconciler fetched it: each an audit entry of the run, in that order."""
    done = run(engine, "rollback", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    branch = f"runbook-bot/revert-{done.id}"
    watch = _watch(engine, pagerduty)
    clock.advance(DAY + 60)
    assert watch.tick().expired != []
    merge(world.apps["api-staging"].repo, branch)
    world.next_pass("us-east-1", "api-staging", clock.advance)
    assert watch.tick().resumed != []
    gitops = [
        r
        for r in engine.audit.export()
        if r.get("execution_id") == done.id and r["action"].startswith("gitops.")
    ]
    assert [r["action"] for r in gitops] == [
        "gitops.suspended",
        "gitops.reverted",
        "gitops.expired",
        "gitops.resumed",
    ]
    suspended, reverted, expired, resumed = gitops
    assert "Flux Kustomization `api-staging`" in suspended["detail"]["description"]
    assert "suspended until Git renders app-api:1.4.1" in " ".join(suspended["detail"]["output"])
    assert f"pushed branch {branch}" in " ".join(reverted["detail"]["output"])
    for entry in (expired, resumed):
        assert entry["actor"]["id"] == "gitops"
        assert entry["target"] == {"environment": "staging", "application": "api-staging"}
        assert entry["detail"]["branch"] == branch
        assert entry["detail"]["region"] == "us-east-1"
    assert expired["outcome"] == "paged" and "still suspended" in expired["detail"]["text"]
    head = world.head("api-staging")
    assert resumed["outcome"] == "ok" and resumed["detail"]["revision"].endswith(head)


@pytest.mark.parametrize(
    ("owner", "kind", "owned", "sync_off"),
    [
        (
            "argo",
            "applications.argoproj.io/api-production",
            "owned by Argo CD application `api-production` (namespace argocd) (automated sync "
            "every 3s (Argo CD's timeout.reconciliation))",
            {"spec": {"syncPolicy": {"automated": None}}},
        ),
        (
            "flux",
            "kustomizations.kustomize.toolkit.fluxcd.io/api-staging",
            "owned by Flux Kustomization `api-staging` (namespace flux-system) (automated sync "
            "every 3s)",
            {"spec": {"suspend": True}},
        ),
    ],
)
def test_readiness_finds_an_owned_deployment_the_bot_may_not_suspend_and_clears_it(
    kube: KubeSandbox,
    world: GitOpsWorld,
    *,
    engine: Engine,
    owner: str,
    kind: str,
    owned: str,
    sync_off: dict[str, Any],
) -> None:
    environment, _, regions = OWNERS[owner]
    resource, _, name = kind.partition("/")
    plural, _, group = resource.partition(".")
    namespace = "argocd" if owner == "argo" else "flux-system"
    forbid = {"rules": [{"group": group, "resource": plural, "verb": "patch"}]}

    def findings() -> dict[str, tuple[bool, str]]:
        report = engine.readiness(actor=ALICE, environment=environment, runbook="rollback")
        return {
            f.subject: (f.ok, f.detail)
            for f in report.findings
            if f.check == "GitOps sync can be suspended"
        }

    ok = f"api-deployment is {owned}: the rollback alone would be reverted; runbook-bot may "
    assert findings() == {f"api {region}": (True, ok + "suspend it") for region in regions}
    broken = regions[-1]  # in one cluster only: one finding
    kube.hook("/_sandbox/forbid", forbid, region=broken)
    found = findings()
    assert [subject for subject, (ok, _) in found.items() if not ok] == [f"api {broken}"]
    detail = found[f"api {broken}"][1]
    assert detail.startswith(f"api-deployment is {owned}: the rollback alone would be reverted")
    assert "RBAC does not let runbook-bot suspend it" in detail
    assert "a rollback would be refused" in detail
    kube.hook("/_sandbox/forbid", {}, region=broken)  # repaired
    assert all(ok for ok, _ in findings().values())
    # Automated sync off by hand: a rollback suspends nothing there, so nothing to find.
    patched = kube.kubectl(
        "patch", resource, name, "-n", namespace, "--type=merge", "-p", json.dumps(sync_off),
        region=broken,
    )  # fmt: skip
    assert patched.returncode == 0, patched.stderr
    kube.hook("/_sandbox/forbid", forbid, region=broken)
    assert f"api {broken}" not in findings()


def test_a_helmrelease_owner_is_refused_rather_than_suspended_for_good(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine
) -> None:
    """The watch follows Applications and Kustomizations only: a HelmRelease it suspended
    would never be given back nor paged at the limit, so the plan refuses (break-glass: no
    suspension, a warning), and readiness says so."""
    kube.cluster("us-east-1").create(
        BY_PATH["helm.toolkit.fluxcd.io", "v2", "helmreleases"],
        "flux-system",
        {
            "metadata": {"name": "api"},
            "spec": {
                "interval": "5m",
                "chart": {
                    "spec": {
                        "chart": "api",
                        "sourceRef": {"kind": "HelmRepository", "name": "charts"},
                    }
                },
            },
        },
    )
    relabelled = kube.kubectl(
        "label", "deployment/api-deployment", "-n", "staging",
        "kustomize.toolkit.fluxcd.io/name-", "kustomize.toolkit.fluxcd.io/namespace-",
        "helm.toolkit.fluxcd.io/name=api", "helm.toolkit.fluxcd.io/namespace=flux-system",
    )  # fmt: skip
    assert relabelled.returncode == 0, relabelled.stderr
    with pytest.raises(Refused, match="runbook-bot does not suspend Flux HelmRelease `api`"):
        engine.prepare("rollback", {"environment": "staging"}, actor=ALICE)
    assert engine.list() == []
    prepared = engine.prepare("rollback", {"environment": "staging"}, actor=ALICE, break_glass=True)
    kinds = [s["kind"] for s in prepared.plan.steps]
    assert "gitops.suspend" not in kinds and "gitops.revert" not in kinds
    assert any(
        "WARNING (break-glass)" in n
        and "WILL revert this rollback at its next sync (every 5m)" in n
        for n in prepared.plan.notes
    ), prepared.plan.notes
    release = _app(kube, "helmrelease", "api", "flux-system")
    assert "suspend" not in release["spec"]  # nothing was patched
    report = engine.readiness(actor=ALICE, environment="staging", runbook="rollback")
    ((finding),) = [f for f in report.findings if f.check == "GitOps sync can be suspended"]
    assert not finding.ok and "does not suspend Flux HelmRelease `api`" in finding.detail
