"""invoke entry point: ``invoke --list``. The same collection is the ``runbook`` command.

Tasks are generated from the runbook registry (runbook_cli.collection), so a new runbook
appears here without editing this file.
"""

from runbook_cli.collection import build_namespace
from runbook_cli.program import (
    clean_listing_for_invoke,
    help_first_for_invoke,
    quiet_when_the_reader_leaves,
)

help_first_for_invoke()  # `invoke TASK --help` prints the task's help, as `runbook` does
quiet_when_the_reader_leaves()  # `invoke runs.list | head` ends quietly, as `runbook` does
clean_listing_for_invoke()  # `invoke --list` shows `rollback`, not `rollback.rollback (rollback)`
namespace = build_namespace()
