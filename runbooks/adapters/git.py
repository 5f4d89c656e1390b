"""Git adapter: the real ``git`` program through subprocess, never a Python Git library.

- Every command has a timeout, no terminal prompt and no user or system configuration.
- Credentials come from configuration (``gitops.token_env`` in environments.yaml: the name of
  a variable holding an HTTPS token, or an ``aws-secretsmanager:`` reference); the token goes
  to git as an ``http.extraHeader`` through ``GIT_CONFIG_*`` variables, never on the command
  line, and is registered with the redactor, so no error, log or audit line carries it.
- Each operation works in a fresh temporary directory, removed after: nothing is cached.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from runbooks.engine.redact import redact_text, register_secret
from runbooks.interfaces import InfrastructureError, Reverted

GIT_TIMEOUT_S = 60.0
AUTHOR = ("runbook-bot", "runbook-bot@users.noreply.example.com")


class GitAdapter:
    """Operations on applications' repositories with one identity."""

    def __init__(self, *, token: str | None = None, timeout: float = GIT_TIMEOUT_S) -> None:
        self._token = token
        self.timeout = timeout
        if token:
            register_secret(token)

    def _env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tempfile.gettempdir(),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": AUTHOR[0],
            "GIT_AUTHOR_EMAIL": AUTHOR[1],
            "GIT_COMMITTER_NAME": AUTHOR[0],
            "GIT_COMMITTER_EMAIL": AUTHOR[1],
        }
        if self._token:
            basic = base64.b64encode(f"x-access-token:{self._token}".encode()).decode()
            register_secret(basic)
            env.update(
                {
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
                }
            )
        return env

    def _git(self, *args: str, cwd: Path | None = None, what: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=cwd,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InfrastructureError(
                f"git did not {what} within {self.timeout:g}s", hint="is the repository reachable?"
            ) from None
        except OSError as exc:
            raise InfrastructureError(f"cannot run git to {what}: {exc}") from None
        if done.returncode != 0:
            detail = redact_text(_why(done.stderr))
            raise InfrastructureError(
                f"git could not {what}: {detail or f'exit {done.returncode}'}"
            )
        return done.stdout

    def branch_head(self, repo_url: str, branch: str) -> str | None:
        out = self._git(
            "ls-remote", "--heads", repo_url, f"refs/heads/{branch}", what=f"read branch {branch}"
        )
        return out.split()[0] if out.strip() else None

    def revert_images(
        self,
        repo_url: str,
        *,
        base: str,
        branch: str,
        path: str,
        images: dict[str, str],
        message: str,
    ) -> Reverted:
        with tempfile.TemporaryDirectory(prefix="runbook-bot-git-") as scratch:
            work = Path(scratch) / "repo"
            self._git(
                "clone",
                "--quiet",
                "--branch",
                base,
                "--single-branch",
                repo_url,
                str(work),
                what=f"clone {base}",
            )
            self._git("checkout", "--quiet", "-b", branch, cwd=work, what=f"create {branch}")
            root = (work / path).resolve()
            if not root.is_relative_to(work.resolve()):
                raise InfrastructureError(f"path {path!r} leaves the repository")
            changed = []
            for file in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
                if ".git" in file.relative_to(work).parts:
                    continue
                text = file.read_text()
                new = text
                for old, wanted in images.items():
                    new = _replace_image(new, old, wanted)
                if new != text:
                    file.write_text(new)
                    changed.append(str(file.relative_to(work)))
            if not changed:
                raise InfrastructureError(
                    f"no YAML under {path!r} on {base} names {', '.join(sorted(images))}: Git "
                    "does not hold the release being rolled back (already reverted, or "
                    "rendered another way); nothing to revert"
                )
            self._git("add", "--", *changed, cwd=work, what="stage the revert")
            self._git("commit", "--quiet", "-m", message, cwd=work, what="commit the revert")
            self._git(
                "push",
                "--quiet",
                "origin",
                f"{branch}:refs/heads/{branch}",
                cwd=work,
                what=f"push {branch}",
            )
            commit = self._git("rev-parse", "HEAD", cwd=work, what="read the commit").strip()
            return Reverted(branch=branch, commit=commit, files=tuple(changed))

    def delete_branch(self, repo_url: str, branch: str) -> None:
        if self.branch_head(repo_url, branch) is None:
            return
        self._git("push", "--quiet", repo_url, f":refs/heads/{branch}", what=f"delete {branch}")

    def images_at(self, repo_url: str, revision: str, path: str) -> dict[str, dict[str, str]]:
        with tempfile.TemporaryDirectory(prefix="runbook-bot-git-") as scratch:
            bare = Path(scratch) / "repo.git"
            self._git("init", "--quiet", "--bare", str(bare), what="prepare a fetch")
            self._git(
                "--git-dir",
                str(bare),
                "fetch",
                "--quiet",
                repo_url,
                "+refs/heads/*:refs/heads/*",
                what="fetch the branches",
            )
            prefix = path.strip("./")
            listed = self._git(
                "--git-dir",
                str(bare),
                "ls-tree",
                "-r",
                "--name-only",
                revision,
                *([prefix] if prefix else []),
                what=f"list {path} at {revision[:12]}",
            )
            found: dict[str, dict[str, str]] = {}
            for name in listed.split():
                if not name.endswith((".yaml", ".yml")):
                    continue
                text = self._git(
                    "--git-dir", str(bare), "show", f"{revision}:{name}", what=f"read {name}"
                )
                found.update(deployment_images(text))
            return found


def _why(stderr: str) -> str:
    """What a failed git command says: its last line, after what the server said (``remote:``
    lines, e.g. a hook refusing a push), which the last line alone leaves out."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    remote = [line for line in lines[:-1] if line.startswith("remote:")][:3]
    return "; ".join([*remote, lines[-1]])


def _replace_image(text: str, old: str, new: str) -> str:
    """Replace an image reference where it stands as a whole value (``image: old``), so
    ``app:1.4.2`` does not also rewrite ``app:1.4.20``."""
    lines = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        stripped = body.rstrip()
        for quote in ("", '"', "'"):
            if stripped.endswith(f"{quote}{old}{quote}") and (
                stripped[: -len(f"{quote}{old}{quote}")].rstrip().endswith((":", "-"))
            ):
                body = stripped[: -len(f"{quote}{old}{quote}")] + f"{quote}{new}{quote}"
                break
        lines.append(body + ending)
    return "".join(lines)


def deployment_images(text: str) -> dict[str, dict[str, str]]:
    """Deployment name → container → image, from one file's YAML documents."""
    found: dict[str, dict[str, str]] = {}
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return found
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Deployment":
            continue
        template = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        found[str((doc.get("metadata") or {}).get("name"))] = {
            str(c.get("name")): str(c.get("image"))
            for c in template.get("containers") or []
            if c.get("image")
        }
    return found
