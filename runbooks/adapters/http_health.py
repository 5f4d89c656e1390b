"""HTTP health endpoints (``/health`` of a region): the status code, or why there was none."""

from __future__ import annotations

import urllib.error
import urllib.request

DEFAULT_TIMEOUT_S = 5.0


class HttpHealth:
    """GET a configured health URL with a timeout; never raises for an unhealthy answer."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout = timeout

    def status(self, url: str) -> int | str:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code
        except OSError as exc:
            return f"no answer ({exc})"
