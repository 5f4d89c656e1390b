"""The runbook modules that make up the product; the engine never names them.

Each entry is a dotted module name that ``load_registry`` imports (``importlib``): a module
(``runbooks.scale``, ``runbooks/scale.py``) or a package (``runbooks.dr``, ``runbooks/dr/``).
Only the named module's own namespace is searched for runbooks and readiness checks, so a
package's ``__init__.py`` imports those its submodules declare. By convention a module's
name is its command namespace (``scale.*`` in ``runbooks/scale.py``, ``dr.*`` in
``runbooks/dr/``); the names themselves are those given to ``@runbook``. A new runbook module
or package is the module plus one line here.
"""

from __future__ import annotations

from runbooks.engine.registry import Registry, load_registry

RUNBOOK_MODULES: tuple[str, ...] = (
    "runbooks.selftest",
    "runbooks.rollback",
    "runbooks.scale",
    "runbooks.dr",
    "runbooks.maintenance",
    "runbooks.restore",
)
#: Readiness checks no runbook owns: every runbook of an environment needs its credentials
#: and reach (AWS, Kubernetes, the database) and the installation's Slack and PagerDuty, and
#: its maintenance windows to open; the drills' evidence must be fresh.
CHECK_MODULES: tuple[str, ...] = (
    "runbooks.reach",
    "runbooks.maintenance_windows",
    "runbooks.freshness",
)


def load_catalog() -> Registry:
    """The product's registry: every runbook of every module above."""
    return load_registry(RUNBOOK_MODULES + CHECK_MODULES)
