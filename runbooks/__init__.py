"""runbook-bot: ops runbooks as code, shared by the CLI, Slack and the scheduler."""
