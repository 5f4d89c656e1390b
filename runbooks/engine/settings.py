"""Settings from the process environment, and where state lives by default.

The defaults must not depend on the current directory: a terminal anywhere in the checkout
and the bot share one state file at ``<checkout>/.runbook-bot/state.db``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runbooks.engine.errors import ConfigError, InvalidInput

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def checkout_root() -> Path | None:
    """The source checkout this package runs from (where tasks.py is), if any."""
    markers = ("tasks.py", "pyproject.toml", "config")
    return PACKAGE_ROOT if all((PACKAGE_ROOT / m).exists() for m in markers) else None


def _state_home() -> Path:
    root = checkout_root()
    if root is not None:
        return root / ".runbook-bot"
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "runbook-bot"


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to find its configuration and state."""

    state_url: str
    config_dir: Path
    state_dir: Path
    audit_key_env: str | None
    user_override: str | None
    lease_ttl: float
    log_target: str
    schedules_path: Path | None = None
    #: The bot's sweep (``RUNBOOK_BOT_SWEEP_INTERVAL``), GitOps watch
    #: (``RUNBOOK_BOT_GITOPS_INTERVAL``) and interpreter switch interval
    #: (``RUNBOOK_BOT_SWITCH_INTERVAL``), in seconds; Slack's work pool
    #: (``RUNBOOK_BOT_SLACK_WORKERS``). Read once here, not at import.
    sweep_interval: float = 2.0
    gitops_interval: float = 30.0
    switch_interval: float = 0.001
    slack_workers: int = 4

    @property
    def state_description(self) -> str:
        if self.state_url.startswith(("mongodb://", "mongodb+srv://")):
            from runbooks.engine.redact import redact_text

            return redact_text(self.state_url)
        return f"sqlite:{self.state_url}"


def _positive(env: Mapping[str, str], name: str, default: float, *, whole: bool = False) -> float:
    """``env[name]`` as a positive number of seconds (a positive whole number with
    ``whole``), ``default`` when unset or empty; else a clear error naming the variable."""
    raw = env.get(name) or ""
    if not raw.strip():
        return default
    what = "a positive whole number" if whole else "a positive number of seconds"
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r} is not {what} (default {default:g})") from None
    if not (0 < value < float("inf")):  # NaN compares false: refused too
        raise InvalidInput(f"{name}={raw!r} is not {what} (default {default:g})")
    return value


def read_sandbox_env(path: Path) -> dict[str, str]:
    """Parse the ``export KEY=VALUE`` lines that ``invoke sandbox.up`` writes."""
    import shlex

    values: dict[str, str] = {}
    if not path.exists():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("export ") and "=" in line:
            key, _, value = line.removeprefix("export ").partition("=")
            parsed = shlex.split(value)
            values[key.strip()] = parsed[0] if parsed else ""
    return values


DEFAULT_PORT = 3000


def bot_port(explicit: int | None = None, environ: dict[str, str] | None = None) -> int:
    """The bot's port, the one rule for the bot, the sandbox and the URL it writes:
    ``--port``, else ``$PORT``, else 3000."""
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    text = env.get("PORT") or ""
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"PORT={text!r} is not a port number (1-65535)")
    return int(text)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read ``RUNBOOK_BOT_*`` variables, falling back to the checkout's defaults."""
    env = dict(os.environ if environ is None else environ)
    state_dir = Path(env.get("RUNBOOK_BOT_HOME") or _state_home())
    state_url = env.get("RUNBOOK_BOT_STATE") or str(state_dir / "state.db")
    if not state_url.startswith(("mongodb://", "mongodb+srv://")):
        state_path = Path(state_url).expanduser()
        state_url = str(state_path if state_path.is_absolute() else Path.cwd() / state_path)
    config = env.get("RUNBOOK_BOT_CONFIG")
    if config:
        config_dir = Path(config).expanduser().resolve()
    else:
        root = checkout_root()
        if root is None:
            raise InvalidInput(
                "no configuration directory: RUNBOOK_BOT_CONFIG is not set and this install "
                "is not a source checkout",
                hint="set RUNBOOK_BOT_CONFIG=/path/to/config (see config/example/)",
            )
        config_dir = root / "config"
    lease_ttl = _positive(env, "RUNBOOK_BOT_LEASE_TTL", 30.0)
    schedules = env.get("RUNBOOK_BOT_SCHEDULES")
    if schedules:
        schedules_path: Path | None = Path(schedules).expanduser().resolve()
    elif (config_dir / "schedules.yaml").exists():
        schedules_path = config_dir / "schedules.yaml"
    else:
        root = checkout_root()
        schedules_path = root / "schedules.yaml" if root is not None else None
    return Settings(
        sweep_interval=_positive(env, "RUNBOOK_BOT_SWEEP_INTERVAL", 2.0),
        gitops_interval=_positive(env, "RUNBOOK_BOT_GITOPS_INTERVAL", 30.0),
        switch_interval=_positive(env, "RUNBOOK_BOT_SWITCH_INTERVAL", 0.001),
        slack_workers=int(_positive(env, "RUNBOOK_BOT_SLACK_WORKERS", 4, whole=True)),
        schedules_path=schedules_path,
        state_url=state_url,
        config_dir=config_dir,
        state_dir=state_dir,
        audit_key_env=env.get("RUNBOOK_BOT_AUDIT_KEY"),
        user_override=env.get("RUNBOOK_USER") or None,
        lease_ttl=lease_ttl,
        log_target=env.get("RUNBOOK_BOT_LOG", ""),
    )
