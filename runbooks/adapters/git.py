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
from pathlib import Path, PurePosixPath

from runbooks.adapters import manifests
from runbooks.engine.redact import redact_text, register_secret
from runbooks.interfaces import ImageSites, InfrastructureError, Reverted

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

    def default_branch(self, repo_url: str) -> str:
        """The branch the remote's HEAD names (what Argo CD's ``targetRevision: HEAD``, its
        default, tracks)."""
        out = self._git("ls-remote", "--symref", repo_url, "HEAD", what="read the default branch")
        for line in out.splitlines():
            ref, _, name = line.partition("\t")
            if name == "HEAD" and ref.startswith("ref: refs/heads/"):
                return ref.removeprefix("ref: refs/heads/")
        raise InfrastructureError(
            f"{repo_url} names no default branch (its HEAD is not a branch); set the "
            "application's targetRevision to the branch it tracks"
        )

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
            files = {
                str(file.relative_to(root)): file.read_text()
                for file in sorted(root.rglob("*"))
                if file.is_file()
                and ".git" not in file.relative_to(work).parts
                and _wanted(file.name)
            }
            try:
                texts, sites = manifests.revert(files, images)
            except manifests.Unsupported as exc:
                raise InfrastructureError(f"{exc} ({repo_url}, {base}, path {path!r})") from None
            missing = sorted(set(images) - set(sites))
            if missing:
                raise InfrastructureError(_not_declared(missing, repo_url, base, path))
            changed = []
            for name, text in sorted(texts.items()):
                (root / name).write_text(text)
                changed.append(str((root / name).relative_to(work.resolve())))
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

    def locate_images(
        self, repo_url: str, *, base: str, path: str, images: dict[str, str]
    ) -> ImageSites:
        with tempfile.TemporaryDirectory(prefix="runbook-bot-git-") as scratch:
            bare = Path(scratch) / "repo.git"
            self._git("init", "--quiet", "--bare", str(bare), what="prepare a fetch")
            self._git(
                "--git-dir",
                str(bare),
                "fetch",
                "--quiet",
                "--depth",
                "1",
                repo_url,
                f"refs/heads/{base}",
                what=f"fetch {base}",
            )
            files = self._files(bare, "FETCH_HEAD", path)
        looked = manifests.LOOKED_FOR.format(image=min(images))
        try:
            _, sites = manifests.revert(files, images)
        except manifests.Unsupported as exc:
            return ImageSites(
                found={}, missing=tuple(sorted(images)), looked=looked, problem=str(exc)
            )
        return ImageSites(
            found=sites, missing=tuple(sorted(set(images) - set(sites))), looked=looked
        )

    def delete_branch(self, repo_url: str, branch: str) -> None:
        if self.branch_head(repo_url, branch) is None:
            return
        self._git("push", "--quiet", repo_url, f":refs/heads/{branch}", what=f"delete {branch}")

    def _fetched(self, scratch: str, repo_url: str) -> Path:
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
        return bare

    def _files(self, bare: Path, revision: str, path: str) -> dict[str, str]:
        """The manifests under ``path`` at ``revision``, by their path relative to it."""
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
        files = {}
        for name in listed.splitlines():
            if not _wanted(PurePosixPath(name).name):
                continue
            relative = name[len(prefix) + 1 :] if prefix else name
            files[relative] = self._git(
                "--git-dir", str(bare), "show", f"{revision}:{name}", what=f"read {name}"
            )
        return files

    def images_at(self, repo_url: str, revision: str, path: str) -> dict[str, dict[str, str]]:
        with tempfile.TemporaryDirectory(prefix="runbook-bot-git-") as scratch:
            files = self._files(self._fetched(scratch, repo_url), revision, path)
        return manifests.rendered(files)

    def renders(
        self,
        repo_url: str,
        revision: str,
        path: str,
        *,
        deployment: str,
        images: dict[str, str],
    ) -> bool:
        with tempfile.TemporaryDirectory(prefix="runbook-bot-git-") as scratch:
            files = self._files(self._fetched(scratch, repo_url), revision, path)
        return manifests.renders(files, deployment, images)


def _wanted(name: str) -> bool:
    """A file that may declare an image: YAML, or kustomize's extension-less name."""
    return name.endswith((".yaml", ".yml")) or name == "Kustomization"


def _not_declared(missing: list[str], repo_url: str, base: str, path: str) -> str:
    return (
        f"no file under {path!r} of {repo_url} ({base}) declares {', '.join(missing)}: looked "
        f"for {manifests.LOOKED_FOR.format(image=missing[0])}; Git does not hold the release "
        "being rolled back (already reverted, or rendered another way); nothing to revert"
    )


def _why(stderr: str) -> str:
    """What a failed git command says: its last line, after what the server said (``remote:``
    lines, e.g. a hook refusing a push), which the last line alone leaves out."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    remote = [line for line in lines[:-1] if line.startswith("remote:")][:3]
    return "; ".join([*remote, lines[-1]])
