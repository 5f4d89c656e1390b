"""invoke entry point: ``invoke --list``. The same collection is the ``runbook`` command.

Tasks are generated from the runbook registry (runbook_cli.collection), so a new runbook
appears here without editing this file.
"""

from runbook_cli.collection import build_namespace

namespace = build_namespace()
