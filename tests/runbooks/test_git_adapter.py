"""The Git adapter with real ``git``: revert branches (one commit, only the image), and a
token that reaches the server as a header but never an error message, argv or the audit."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runbooks.adapters.git import GitAdapter
from runbooks.engine.redact import redact_text
from runbooks.interfaces import InfrastructureError
from sandbox.gitops import create_repository, git

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
