"""Credentials and reach (runbooks/reach.py) against the sandbox: AWS STS on moto, one
SelfSubjectAccessReview per verb of the shipped Role on each Kubernetes emulator, MongoDB
ping on the Atlas wire server, Slack ``auth.test`` and PagerDuty's token on their emulators.
Each is broken alone from outside the bot: exactly one finding names it, and repairing it
clears it. Nothing is written (the Kubernetes write log; Slack and PagerDuty call logs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runbooks.engine.config.loader import Config
from runbooks.engine.readiness import ReadinessReport
from tests.conftest import KUBECTL, KubeSandbox
from tests.runbooks.conftest import Chat, live_engine
from tests.support.people import ALICE

REGIONS = ("us-east-1", "us-west-2")
SCALE = {"namespace": "production", "group": "apps", "resource": "deployments/scale"}


@dataclass
class World:
    kube: KubeSandbox
    chat: Chat
    monkeypatch: pytest.MonkeyPatch
    config: Config
    directory: Path

    def evaluate(self) -> ReadinessReport:
        """One evaluation of production's credentials and reach (and the installation's), by a
        fresh engine (no client cached from the last one), asserting it wrote nothing."""
        seen = {r: len(self.kube.cluster(r).requests) for r in REGIONS}
        slack_calls = len(self.chat.slack.calls())
        pagerduty_calls = len(self.chat.pagerduty.calls())
        self.directory.mkdir(exist_ok=True)
        with live_engine(
            self.config, self.directory, kubeconfig=str(self.kube.kubeconfig)
        ) as engine:
            report = engine.readiness(actor=ALICE, environment="production", runbook="environment")
        for region in REGIONS:
            assert self.kube.cluster(region).writes(seen[region]) == []
        assert {c["method"] for c in self.chat.slack.calls()[slack_calls:]} == {"auth.test"}
        pd = self.chat.pagerduty.calls()[pagerduty_calls:]
        assert {(c["method"], c["path"]) for c in pd} == {("GET", "/abilities")}
        return report


@pytest.fixture
def world(
    *,
    kube: KubeSandbox,
    aws: Any,
    cluster: Any,
    chat: Chat,
    sandbox_config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    """The sandbox's AWS, clusters, Atlas, Slack and PagerDuty, all reachable and valid."""
    return World(kube, chat, monkeypatch, sandbox_config, tmp_path / "state")


def kubectl_can_i(kube: KubeSandbox, region: str) -> str:
    """``kubectl auth can-i``: the independent client's answer ("yes" or "no")."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed on this machine (it is on the CI image)")
    found = kube.kubectl(
        "auth", "can-i", "patch", "deployments", "--subresource=scale", "-n", "production",
        region=region,
    )  # fmt: skip
    return found.stdout.strip()


def without_aws_credentials(w: World) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        w.monkeypatch.delenv(key, raising=False)
    w.monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(w.directory / "none"))
    w.monkeypatch.setenv("AWS_CONFIG_FILE", str(w.directory / "none"))
    w.monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def with_aws_credentials(w: World) -> None:
    from sandbox.aws import CREDENTIALS

    for key, value in CREDENTIALS.items():
        w.monkeypatch.setenv(key, value)


def deny_scale(w: World) -> None:
    w.kube.hook("/_sandbox/deny", {**SCALE, "verb": "patch"}, region="us-west-2")
    assert kubectl_can_i(w.kube, "us-west-2").startswith("no")
    assert kubectl_can_i(w.kube, "us-east-1") == "yes"


def allow_scale(w: World) -> None:
    w.kube.hook("/_sandbox/deny", {**SCALE, "verb": "patch", "allow": True}, region="us-west-2")
    assert kubectl_can_i(w.kube, "us-west-2") == "yes"


def slack_revoked(w: World) -> None:
    w.chat.hook(w.chat.slack.url + "/_sandbox/revoke", {"revoked": True})


def slack_restored(w: World) -> None:
    w.chat.hook(w.chat.slack.url + "/_sandbox/revoke", {"revoked": False})


def pagerduty_revoked(w: World) -> None:
    w.chat.hook(w.chat.pagerduty.url + "/_sandbox/revoke", {"revoked": True})


def pagerduty_restored(w: World) -> None:
    w.chat.hook(w.chat.pagerduty.url + "/_sandbox/revoke", {"revoked": False})


Change = Callable[[World], None]
CASES: dict[str, tuple[Change, Change, str, str, str]] = {
    # name: (break, repair, environment, subject, words in the finding)
    "aws-credentials": (
        without_aws_credentials, with_aws_credentials, "production", "AWS",
        "us-east-1: sts get-caller-identity in us-east-1: no AWS credentials; us-west-2: ",
    ),
    "kubernetes-verb-denied": (
        deny_scale, allow_scale, "production", "Kubernetes us-west-2 production",
        "the bot may not patch deployments/scale.apps (denied by the sandbox's access hook) "
        "in namespace production",
    ),
    "slack-token-revoked": (
        slack_revoked, slack_restored, "*", "Slack", "Slack auth.test: token_revoked",
    ),
    "pagerduty-token-revoked": (
        pagerduty_revoked, pagerduty_restored, "*", "PagerDuty", "HTTP 401",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_each_credential_broken_alone_is_one_finding_and_repairing_it_clears_it(
    case: str, world: World
) -> None:
    breaks, repair, environment, subject, words = CASES[case]

    ready = world.evaluate()
    assert ready.problems == [], [f.detail for f in ready.problems]
    checked = {(f.environment, f.subject) for f in ready.findings}
    assert ("production", "AWS") in checked
    assert {("production", f"Kubernetes {r} production") for r in REGIONS} <= checked
    assert {("production", "database"), ("*", "Slack"), ("*", "PagerDuty")} <= checked

    breaks(world)
    (found,) = world.evaluate().problems
    assert (found.environment, found.runbook, found.subject) == (
        environment, "environment", subject,
    )  # fmt: skip
    assert words in found.detail, found.detail

    repair(world)
    assert world.evaluate().problems == []


def test_an_unreachable_database_is_a_finding(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens where production's database should be: the ping check says so (after
    the configured 10 s server selection timeout), never a pass."""
    monkeypatch.setenv("PRODUCTION_MONGODB_URI", "mongodb://127.0.0.1:9/?directConnection=true")
    (found,) = world.evaluate().problems
    assert found.subject == "database"
    assert found.detail.startswith("could not be checked: production database: ping: ")


def test_the_access_reviews_reach_the_emulator_as_kubectl_sends_them(kube: KubeSandbox) -> None:
    """The emulator's review endpoint answers kubectl too (the oracle above), and a deny hook
    with a missing field is refused with 400, changing nothing."""
    assert kubectl_can_i(kube, "us-east-1") == "yes"
    with pytest.raises(Exception, match="400"):
        kube.hook("/_sandbox/deny", {"namespace": "production", "verb": "patch"})
    assert kube.cluster("us-east-1").denied == set()
