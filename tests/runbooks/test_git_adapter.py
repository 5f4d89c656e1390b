"""The Git adapter with real ``git``: revert branches (one commit, only the image), and a
token that reaches the server as a header but never an error message, argv or the audit."""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from runbooks.adapters import manifests
from runbooks.adapters.git import GitAdapter
from runbooks.engine.redact import redact_text
from runbooks.interfaces import InfrastructureError
from sandbox.gitops import Layout, create_repository, git, rendered_images

#: Shaped like nothing the redactor knows: only its registration can mask it.
TOKEN = "q7Zr2-plain-gitops-token-Wk3v"


@pytest.fixture
def refusing_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server that records Authorization headers and answers 403 (as a host does
    when a token is wrong)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization") or "")
            body = b"denied\n"
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/org/deploy.git", seen
    server.shutdown()
    server.server_close()


def test_the_token_goes_as_a_header_and_never_into_an_error(
    refusing_server: tuple[str, list[str]],
) -> None:
    url, seen = refusing_server
    adapter = GitAdapter(token=TOKEN, timeout=20)
    with pytest.raises(InfrastructureError) as raised:
        adapter.branch_head(url, "main")
    expected = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert f"Basic {expected}" in seen  # the server got it
    assert TOKEN not in str(raised.value) and expected not in str(raised.value)
    # Registered with the one redactor: logs, audit, Slack and PagerDuty mask it (and the
    # header's encoding of it).
    assert redact_text(f"pushed with {TOKEN}") == "pushed with ***"
    assert redact_text(f"sent {expected}") == "sent ***"


def test_revert_pushes_one_commit_changing_only_the_image(tmp_path: Path) -> None:
    repo = create_repository(tmp_path, "api-staging", "staging", "api-deployment")
    old = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:1.4.2"
    new = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:1.4.1"
    adapter = GitAdapter()
    done = adapter.revert_images(
        repo.as_uri(),
        base="main",
        branch="runbook-bot/revert-rb-1",
        path=".",
        images={old: new},
        message="Revert",
    )
    assert done.files == ("deployment.yaml",)
    assert adapter.branch_head(repo.as_uri(), "runbook-bot/revert-rb-1") == done.commit
    commits = git("--git-dir", str(repo), "log", "--format=%H", "main..runbook-bot/revert-rb-1")
    assert commits.split() == [done.commit]
    diff = git("--git-dir", str(repo), "diff", "--unified=0", "main", done.commit)
    changed = [
        line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in {"+++", "---"}
    ]
    assert changed == [f"-        image: {old}", f"+        image: {new}"]
    assert adapter.images_at(repo.as_uri(), done.commit, ".")["api-deployment"] == {"api": new}
    # Nothing left to revert: refused with the reason, nothing pushed.
    with pytest.raises(InfrastructureError, match="does not hold the release"):
        adapter.revert_images(
            repo.as_uri(),
            base="main",
            branch="runbook-bot/revert-rb-2",
            path=".",
            images={"registry/other:9": new},
            message="Revert",
        )
    assert adapter.branch_head(repo.as_uri(), "runbook-bot/revert-rb-2") is None
    adapter.delete_branch(repo.as_uri(), "runbook-bot/revert-rb-1")
    assert adapter.branch_head(repo.as_uri(), "runbook-bot/revert-rb-1") is None


OLD = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:1.4.2"
NEW = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:1.4.1"


def _changed(repo: Path, commit: str) -> list[str]:
    diff = git("--git-dir", str(repo), "diff", "--unified=0", "main", commit)
    return [
        line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in {"+++", "---"}
    ]


@pytest.mark.parametrize(
    ("layout", "site", "file", "lines"),
    [
        (
            "kustomize",
            "kustomization.yaml: `images:` entry "
            "`123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api` (newTag)",
            "kustomization.yaml",
            ["-    newTag: 1.4.2", "+    newTag: 1.4.1"],
        ),
        ("helm", "values.yaml: image.tag", "values.yaml", ['-  tag: "1.4.2"', '+  tag: "1.4.1"']),
    ],
)
def test_revert_sets_the_image_where_the_path_declares_it(
    tmp_path: Path, layout: Layout, site: str, file: str, lines: list[str]
) -> None:
    repo = create_repository(tmp_path, "api", "staging", "api-deployment", layout=layout)
    adapter = GitAdapter()
    located = adapter.locate_images(repo.as_uri(), base="main", path=".", images={OLD: NEW})
    assert (located.found, located.missing) == ({OLD: site}, ())
    done = adapter.revert_images(
        repo.as_uri(),
        base="main",
        branch="runbook-bot/revert-rb-1",
        path=".",
        images={OLD: NEW},
        message="Revert",
    )
    assert done.files == (file,)
    assert _changed(repo, done.commit) == lines  # one line; comments and quoting kept
    if layout == "kustomize":  # kustomize itself renders the branch
        assert rendered_images(repo, done.commit)["api-deployment"] == {"api": NEW}
    else:
        values = yaml.safe_load(git("--git-dir", str(repo), "show", f"{done.commit}:{file}"))
        assert values["image"] == {
            "repository": NEW.rsplit(":", 1)[0],
            "tag": "1.4.1",
            "pullPolicy": "IfNotPresent",
        }
    images = {"api": NEW}
    assert adapter.renders(
        repo.as_uri(), done.commit, ".", deployment="api-deployment", images=images
    )
    head = git("--git-dir", str(repo), "rev-parse", "main").strip()
    assert not adapter.renders(repo.as_uri(), head, ".", deployment="api-deployment", images=images)


@pytest.mark.parametrize(
    ("base", "entry", "old", "new"),
    [
        # by digest
        (
            "registry.example/app",
            "  - name: registry.example/app\n    digest: sha256:" + "a" * 64 + "\n",
            "registry.example/app@sha256:" + "a" * 64,
            "registry.example/app@sha256:" + "b" * 64,
        ),
        # renamed in the kustomization, and the release to return to has another name
        (
            "app",
            "  - name: app\n    newName: registry.example/app\n    newTag: '2.0'\n",
            "registry.example/app:2.0",
            "mirror.example/app:1.10",
        ),
        # no newName yet: one is added under the name; the comment stays
        (
            "app",
            '  - name: app\n    newTag: "2.0"  # pinned\n',
            "app:2.0",
            "mirror.example/app:1.9",
        ),
    ],
)
def test_kustomize_entries_by_digest_and_by_name_render_the_release_to_return_to(
    tmp_path: Path, base: str, entry: str, old: str, new: str
) -> None:
    """Before and after the edit, judged by kustomize itself (``kubectl kustomize``)."""
    files = {
        "deployment.yaml": (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n"
            "  template:\n    spec:\n      containers:\n        - name: web\n"
            f"          image: {base}\n"
        ),
        "kustomization.yaml": f"resources:\n  - deployment.yaml\nimages:\n{entry}",
    }
    assert _kustomize(tmp_path / "before", files) == old
    assert manifests.rendered(files)["web"]["web"] == old
    changed, sites = manifests.revert(files, {old: new})
    assert list(changed) == ["kustomization.yaml"] and old in sites
    after = {**files, **changed}
    assert _kustomize(tmp_path / "after", after) == new
    assert manifests.rendered(after)["web"]["web"] == new
    assert ("# pinned" in after["kustomization.yaml"]) == ("# pinned" in entry)


def _kustomize(directory: Path, files: dict[str, str]) -> str:
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    done = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (deployment,) = yaml.safe_load_all(done.stdout)
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def test_an_image_declared_nowhere_the_bot_looks_is_refused_before_any_push(
    tmp_path: Path,
) -> None:
    # The chart takes its tag from Chart.yaml's appVersion: not a place the bot rewrites.
    repo = create_repository(tmp_path, "api", "staging", "api-deployment", layout="appversion")
    adapter = GitAdapter()
    located = adapter.locate_images(repo.as_uri(), base="main", path=".", images={OLD: NEW})
    assert located.found == {} and located.missing == (OLD,)
    assert "kustomization.yaml `images:` entry" in located.looked
    assert "image.repository/image.tag" in located.looked
    with pytest.raises(InfrastructureError, match=r"looked for a kustomization\.yaml"):
        adapter.revert_images(
            repo.as_uri(),
            base="main",
            branch="runbook-bot/revert-rb-1",
            path=".",
            images={OLD: NEW},
            message="Revert",
        )
    assert adapter.branch_head(repo.as_uri(), "runbook-bot/revert-rb-1") is None


def test_helm_values_at_any_depth_with_a_registry_keep_their_types_and_comments() -> None:
    values = (
        "api:\n"
        "  image:\n"
        "    registry: registry.example  # mirrored\n"
        "    repository: team/app\n"
        "    tag: 2.0\n"
        "worker:\n"
        "  image:\n"
        "    repository: team/worker\n"
        "    tag: 2.0\n"
    )
    changed, sites = manifests.revert(
        {"values.yaml": values}, {"registry.example/team/app:2.0": "registry.example/team/app:1.10"}
    )
    assert sites == {"registry.example/team/app:2.0": "values.yaml: api.image.tag"}
    after = changed["values.yaml"]
    assert "# mirrored" in after
    loaded = yaml.safe_load(after)
    assert loaded["api"]["image"]["tag"] == "1.10"  # a string, not the float 1.1
    assert loaded["worker"]["image"]["tag"] == 2.0  # untouched, as it was
    assert manifests.declared({"values.yaml": after}) >= {"registry.example/team/app:1.10"}


def test_a_tag_entry_is_not_rewritten_to_a_digest_and_the_plan_is_told_why(tmp_path: Path) -> None:
    repo = create_repository(tmp_path, "api", "staging", "api-deployment", layout="kustomize")
    by_digest = NEW.rsplit(":", 1)[0] + "@sha256:" + "c" * 64
    located = GitAdapter().locate_images(
        repo.as_uri(), base="main", path=".", images={OLD: by_digest}
    )
    assert located.missing == (OLD,)
    assert located.problem is not None and "pins" in located.problem
    assert "is not pinned alike: not rewritten" in located.problem
