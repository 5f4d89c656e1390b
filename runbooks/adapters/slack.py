"""Slack's Web API for readiness: does the bot token still work (``auth.test``)?

The bot's own Slack front end lives in ``bot/``; this adapter only asks who the token is, so
the engine's readiness checks can say a revoked token before the night it is needed. The
token and URL are the bot's (``SLACK_BOT_TOKEN``, ``SLACK_API_URL``); the call has a timeout.
"""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from runbooks.interfaces import InfrastructureError

TIMEOUT_S = 10
DEFAULT_API_URL = "https://slack.com/api/"


class SlackIdentity:
    """``auth.test`` with the bot token."""

    def __init__(self, token: str, api_url: str | None = None) -> None:
        url = api_url or DEFAULT_API_URL
        # WebClient silently drops the path unless the base URL ends with a slash.
        self._client = WebClient(
            token=token, base_url=url if url.endswith("/") else url + "/", timeout=TIMEOUT_S
        )

    def identity(self) -> str:
        try:
            found = self._client.auth_test()
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            raise InfrastructureError(f"Slack auth.test: {error or exc}") from None
        except (SlackClientError, OSError) as exc:
            raise InfrastructureError(f"Slack auth.test: {type(exc).__name__}: {exc}") from None
        return f"bot {found.get('user_id', '?')} in team {found.get('team_id', '?')}"
