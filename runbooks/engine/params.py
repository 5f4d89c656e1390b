"""Typed runbook parameters: a pydantic model per runbook, validated against configuration.

Validation messages are for humans: ``--replicas: must be at most 20 (got 50)`` and
``unknown environment 'prod'; known: development, staging, production``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from runbooks.engine.config.loader import Config
from runbooks.engine.errors import InvalidInput


class RunbookParams(BaseModel):
    """Base of every ``<Runbook>Params``: an environment, validated against the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The CLI's and Slack's help add the configured environments ("one of: …").
    environment: str = Field(description="environment to act on")

    @field_validator("environment")
    @classmethod
    def _known_environment(cls, value: str, info: ValidationInfo) -> str:
        config = _config(info)
        if config is not None and value not in config.environment_names():
            raise ValueError(
                f"unknown environment {value!r}; known: {', '.join(config.environment_names())}"
            )
        return value


class RegionalParams(RunbookParams):
    """Parameters with an optional region that must belong to the environment."""

    region: str | None = Field(
        None, description="region (default: the one serving the environment; rollback: all)"
    )

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str | None, info: ValidationInfo) -> str | None:
        config = _config(info)
        environment = info.data.get("environment")
        if value is None or config is None or environment is None:
            return value
        regions = config.environment(environment).regions
        if value not in regions:
            raise ValueError(
                f"unknown region {value!r} for {environment}; known: {', '.join(regions)}"
            )
        return value


def _config(info: ValidationInfo) -> Config | None:
    context = info.context or {}
    config = context.get("config")
    return config if isinstance(config, Config) else None


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _humanise(item: Any) -> str:
    loc = ".".join(str(p) for p in item["loc"]) or "parameters"
    msg: str = item["msg"].removeprefix("Value error, ")
    kind = item["type"]
    given = item.get("input")
    ctx = item.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"unknown parameter {flag(loc)}"
    if kind == "missing":
        return f"{flag(loc)} is required"
    if kind in {"less_than_equal", "less_than"}:
        msg = f"must be at most {ctx.get('le', ctx.get('lt'))} (got {given})"
    elif kind in {"greater_than_equal", "greater_than"}:
        msg = f"must be at least {ctx.get('ge', ctx.get('gt'))} (got {given})"
    elif kind.startswith("int_"):
        msg = f"must be a whole number (got {given!r})"
    elif kind == "literal_error":
        msg = f"must be one of {ctx.get('expected')} (got {given!r})"
    return f"{flag(loc)}: {msg}"


def validate_params(
    model: type[RunbookParams], raw: dict[str, Any], config: Config
) -> RunbookParams:
    """Validate raw (string or typed) values; raise InvalidInput naming every problem."""
    cleaned = {k: v for k, v in raw.items() if v is not None}
    try:
        return model.model_validate(cleaned, context={"config": config})
    except ValidationError as exc:
        problems = [_humanise(item) for item in exc.errors()]
        raise InvalidInput("; ".join(problems)) from None
