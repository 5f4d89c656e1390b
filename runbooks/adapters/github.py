"""GitHub's REST API for revert branches' pull requests, read with the standard library.

- ``GET /repos/{owner}/{repo}/pulls?head=owner:branch&base=…&state=open`` first: a pull
  request already open for the branch (a resumed run) is returned, never duplicated; a 422
  "A pull request already exists" on creation (a race) is answered the same way.
- ``POST /repos/{owner}/{repo}/pulls`` with ``head``, ``base``, ``title``, ``body``.
- Every call has a timeout; the token goes in the ``Authorization`` header only and is
  registered with the redactor, so no error, log or audit line carries it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from runbooks.engine.redact import redact_text, register_secret
from runbooks.interfaces import InfrastructureError, PullRequest, expand_vars

TIMEOUT_S = 10.0
API_VERSION = "2022-11-28"


class GitHubPulls:
    """Pull requests in GitHub (or GitHub Enterprise Server) repositories, as one identity."""

    def __init__(self, api_url: str, token: str, *, timeout: float = TIMEOUT_S) -> None:
        self.url = expand_vars(api_url, what="gitops.pull_request.api_url").rstrip("/")
        self._token = token
        self.timeout = timeout
        register_secret(token)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 (a configured http(s) URL)
            f"{self.url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self._token}",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "runbook-bot",
                **({"Content-Type": "application/json"} if body is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                raise _refused(exc, f"{method} {path}") from None
            finally:
                exc.close()
        except (OSError, ValueError) as exc:
            raise InfrastructureError(
                redact_text(f"GitHub at {self.url} did not answer {method} {path}: {exc}")
            ) from None

    def _open_for(self, repository: str, *, head: str, base: str) -> PullRequest | None:
        owner = repository.split("/", 1)[0]
        query = urllib.parse.urlencode({"head": f"{owner}:{head}", "base": base, "state": "open"})
        found = self._call("GET", f"/repos/{repository}/pulls?{query}")
        if not isinstance(found, list) or not found:
            return None
        return _pull(found[0], existed=True)

    def open_pull_request(
        self, repository: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        existing = self._open_for(repository, head=head, base=base)
        if existing is not None:
            return existing
        try:
            created = self._call(
                "POST",
                f"/repos/{repository}/pulls",
                {"head": head, "base": base, "title": title, "body": body},
            )
        except _AlreadyExists:
            # Opened between our look and our create (another replica, a person).
            again = self._open_for(repository, head=head, base=base)
            if again is None:
                raise
            return again
        return _pull(created, existed=False)


class _AlreadyExists(InfrastructureError):
    """GitHub's 422 "A pull request already exists for owner:branch"."""


def _refused(exc: urllib.error.HTTPError, what: str) -> InfrastructureError:
    try:
        doc = json.loads(exc.read() or b"{}")
    except ValueError:
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    details = [
        str(e.get("message") or e.get("code"))
        for e in doc.get("errors") or []
        if isinstance(e, dict) and (e.get("message") or e.get("code"))
    ]
    message = "; ".join([str(doc.get("message") or exc.reason), *details])
    text = redact_text(f"GitHub refused {what} ({exc.code}): {message}")
    if exc.code == 422 and any("already exists" in d for d in details):
        return _AlreadyExists(text)
    hint = {
        401: "the token is not valid (gitops.pull_request.token_env)",
        403: "the token may not open pull requests in this repository",
        404: "check gitops.pull_request.repositories (owner/name) and the token's access",
    }.get(exc.code)
    return InfrastructureError(text, hint=hint)


def _pull(doc: Any, *, existed: bool) -> PullRequest:
    if not isinstance(doc, dict) or not doc.get("html_url") or "number" not in doc:
        raise InfrastructureError(f"GitHub answered without a pull request: {str(doc)[:200]}")
    return PullRequest(url=str(doc["html_url"]), number=int(doc["number"]), existed=existed)
