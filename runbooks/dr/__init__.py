"""Disaster recovery: ``dr.status`` (read-only), ``dr.failover`` and ``dr.failback``, and
``dr.simulate``.

One module per concern: ``status`` (``dr.status``), ``failover`` (``dr.failover`` and
``dr.failback``, their steps, the predicted RTO), ``readiness`` (``dr.failover``'s readiness
checks), ``simulate`` (``dr.simulate``'s data scenarios), ``region_failure`` (its
region-failure scenario) and ``common`` (what they share).

The catalog loads this package as one runbook module (``runbooks.catalog``): it collects the
runbooks and readiness checks named here, so each is imported below, the checks in the order
they are evaluated.
"""

from __future__ import annotations

from runbooks.dr.common import error_rate_query
from runbooks.dr.failover import dr_failback, dr_failover
from runbooks.dr.simulate import dr_simulate
from runbooks.dr.status import dr_status

# Not sorted: the registry evaluates the checks in the order of this namespace, the order in
# which they were declared (standby, Atlas regions, predicted RTO).
from runbooks.dr.readiness import standby_ready, atlas_regions, predicted_rto  # isort: skip

__all__ = [
    "atlas_regions",
    "dr_failback",
    "dr_failover",
    "dr_simulate",
    "dr_status",
    "error_rate_query",
    "predicted_rto",
    "standby_ready",
]
