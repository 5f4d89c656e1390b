"""Maintenance inside a window: ``maintenance.resize`` and ``maintenance.resources``.

One module per runbook: ``resize`` (``maintenance.resize``: a node group's or a standalone
instance's type, and its steps) and ``resources`` (``maintenance.resources``: a service's
container requests/limits, and its step). They share nothing but ``runbooks.kit``.

The catalog loads this package as one runbook module (``runbooks.catalog``): it collects the
runbooks named here, so each is imported below. Each is bound under a name of its own, not
its planner's: ``resize`` and ``resources`` stay the submodules (binding a runbook there
would shadow the module it comes from, and ``import runbooks.maintenance.resize`` would give
the runbook).
"""

from __future__ import annotations

from runbooks.maintenance.resize import resize as maintenance_resize
from runbooks.maintenance.resources import resources as maintenance_resources

__all__ = ["maintenance_resize", "maintenance_resources"]
