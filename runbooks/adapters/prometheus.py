"""Prometheus through its HTTP API (``GET /api/v1/query``): one instant query at a time.

No SDK: the API is one JSON endpoint, read with the standard library.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

from runbooks.interfaces import InfrastructureError, expand_vars

TIMEOUT_S = 5.0


class PrometheusAdapter:
    def __init__(self, url: str) -> None:
        self.url = expand_vars(url, what="Prometheus URL").rstrip("/")

    def query(self, expr: str) -> float | None:
        """The value of an instant query; None when it has no samples (or NaN: no traffic)."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(address, timeout=TIMEOUT_S) as response:  # noqa: S310
                doc = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            finally:
                exc.close()
            raise InfrastructureError(
                f"Prometheus at {self.url} refused the query ({exc.code}): {detail}"
            ) from None
        except (OSError, ValueError) as exc:
            raise InfrastructureError(f"Prometheus at {self.url} did not answer: {exc}") from None
        if doc.get("status") != "success":
            raise InfrastructureError(f"Prometheus at {self.url}: {doc.get('error', doc)}")
        data = doc.get("data", {})
        result = data.get("result", [])
        if data.get("resultType") == "scalar":
            result = [{"value": result}]
        if not result:
            return None
        try:
            value = float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise InfrastructureError(
                f"Prometheus at {self.url}: unexpected answer {result[0]!r}"
            ) from None
        return None if math.isnan(value) else value
