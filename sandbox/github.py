"""A local GitHub REST API: the pull-request calls runbook-bot makes for revert branches.

It answers, checking ``Authorization: Bearer <token>`` (or ``token <token>``) and 401 "Bad
credentials" otherwise:

- ``GET /repos/{owner}/{repo}/pulls`` with ``head=owner:branch``, ``base`` and ``state``
  (``open`` by default, ``closed``, ``all``): the matching pull requests, newest first;
- ``POST /repos/{owner}/{repo}/pulls`` (``head``, ``base``, ``title``, ``body``): 201 with
  ``number`` and ``html_url``; 422 "Validation Failed" when ``head`` or ``base`` is not a
  branch of the repository's bare Git directory (read with real ``git``), or with "A pull
  request already exists for owner:branch." when one is open for that head and base.

A repository it does not know answers 404; a body that is not JSON 400. It records every call
(``state.calls``: method, path, query, body, the Authorization header) for tests to read.

Sandbox hooks (not GitHub's API, no token): ``POST /_sandbox/fail {"status": 502,
"message": "...", "count": 1, "method": "POST"}`` makes the next ``count`` API calls (of that
method, any when omitted) answer that status; ``{"count": 0}`` clears it. The same from
Python: ``fail(...)``.

Gaps: no merge, review, draft, label or comment API; a deleted head branch does not close its
pull request (GitHub closes it); no pagination (one page); no GitLab merge requests.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.local_http import JsonHandler, LocalServer, QuietServer

SANDBOX_GITHUB_TOKEN = "ghs_SandboxGitHubEmulatorToken0000000001"  # noqa: S105 - the emulator's
WEB = "https://github.sandbox.local"


@dataclass
class GitHubState:
    token: str = SANDBOX_GITHUB_TOKEN
    #: ``owner/name`` → the repository's bare Git directory (branches are read from it).
    repos: dict[str, Path] = field(default_factory=dict)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    #: Answer the next ``count`` calls (of ``method``, or any) with ``status`` and ``message``.
    failure: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def creations(self) -> list[dict[str, Any]]:
        """The ``POST .../pulls`` calls received, answered or not."""
        return [c for c in self.calls if c["method"] == "POST" and c["path"].endswith("/pulls")]


def _branch_exists(repo: Path, branch: str) -> bool:
    done = subprocess.run(
        ["git", "--git-dir", str(repo), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0


class _Handler(JsonHandler):
    server: _Server

    def _handle(self, method: str) -> None:
        state = self.server.state
        parsed = urllib.parse.urlparse(self.path)
        path, query = parsed.path, urllib.parse.parse_qs(parsed.query)
        try:
            body = self._body() if method == "POST" else {}
        except json.JSONDecodeError:
            self._send(400, {"message": "Problems parsing JSON"})
            return
        with state.lock:
            if path == "/_sandbox/fail" and method == "POST":
                state.failure = dict(body) if isinstance(body, dict) else {}
                self._send(200, {"failure": state.failure})
                return
            state.calls.append(
                {
                    "method": method,
                    "path": path,
                    "query": query,
                    "body": body,
                    "authorization": self.headers.get("Authorization"),
                }
            )
            auth = self.headers.get("Authorization", "")
            if auth not in (f"Bearer {state.token}", f"token {state.token}"):
                self._send(401, {"message": "Bad credentials"})
                return
            failure = state.failure
            if int(failure.get("count", 0)) > 0 and failure.get("method", method) == method:
                failure["count"] = int(failure["count"]) - 1
                self._send(
                    int(failure.get("status", 502)),
                    {"message": str(failure.get("message", "Server Error"))},
                )
                return
            parts = path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "repos" or parts[3] != "pulls":
                self._send(404, {"message": "Not Found"})
                return
            repository = f"{parts[1]}/{parts[2]}"
            if repository not in state.repos:
                self._send(404, {"message": "Not Found"})
                return
            if method == "GET":
                self._list(state, repository, query)
            else:
                self._create(state, repository, body)

    def _list(self, state: GitHubState, repository: str, query: dict[str, list[str]]) -> None:
        wanted = query.get("state", ["open"])[0]
        head = query.get("head", [None])[0]
        base = query.get("base", [None])[0]
        found = [
            p
            for p in reversed(state.pulls)
            if p["repository"] == repository
            and (wanted == "all" or p["state"] == wanted)
            and (head is None or p["head"]["label"] == head)
            and (base is None or p["base"]["ref"] == base)
        ]
        self._send(200, [_public(p) for p in found])

    def _create(self, state: GitHubState, repository: str, body: Any) -> None:
        if not isinstance(body, dict):
            self._send(400, {"message": "Problems parsing JSON"})
            return
        missing = [k for k in ("head", "base", "title") if not isinstance(body.get(k), str)]
        if missing:
            self._send(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [
                        {"resource": "PullRequest", "field": k, "code": "missing_field"}
                        for k in missing
                    ],
                },
            )
            return
        owner = repository.split("/", 1)[0]
        head, base = str(body["head"]), str(body["base"])
        branch = head.split(":", 1)[1] if ":" in head else head
        label = f"{owner}:{branch}"
        invalid = [
            name
            for name, ref in (("head", branch), ("base", base))
            if not _branch_exists(state.repos[repository], ref)
        ]
        if invalid:
            self._send(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [
                        {"resource": "PullRequest", "field": name, "code": "invalid"}
                        for name in invalid
                    ],
                },
            )
            return
        if any(
            p["repository"] == repository
            and p["state"] == "open"
            and p["head"]["label"] == label
            and p["base"]["ref"] == base
            for p in state.pulls
        ):
            self._send(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": f"A pull request already exists for {label}.",
                        }
                    ],
                },
            )
            return
        number = next(state._numbers)
        pull = {
            "repository": repository,
            "number": number,
            "state": "open",
            "title": str(body["title"]),
            "body": str(body.get("body") or ""),
            "head": {"ref": branch, "label": label},
            "base": {"ref": base, "label": f"{owner}:{base}"},
            "html_url": f"{WEB}/{repository}/pull/{number}",
        }
        state.pulls.append(pull)
        self._send(201, _public(pull))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


def _public(pull: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in pull.items() if k != "repository"}
    doc["url"] = f"/repos/{pull['repository']}/pulls/{pull['number']}"
    return doc


class _Server(QuietServer):
    def __init__(self, port: int, state: GitHubState) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state


class GitHubEmulator(LocalServer[_Server]):
    """The local GitHub API on http://127.0.0.1 (a free port unless given), knowing
    ``repos`` (``owner/name`` → bare Git directory)."""

    def __init__(
        self, *, repos: dict[str, Path] | None = None, port: int = 0, token: str | None = None
    ) -> None:
        state = GitHubState(repos=dict(repos or {}))
        if token is not None:
            state.token = token
        super().__init__(_Server(port, state), name="github-emulator")

    @property
    def state(self) -> GitHubState:
        return self.server.state

    def fail(self, *, status: int = 502, message: str = "Server Error", count: int = 1) -> None:
        """Answer the next ``count`` API calls with ``status`` (0 clears)."""
        with self.state.lock:
            self.state.failure = {"status": status, "message": message, "count": count}
