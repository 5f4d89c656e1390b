"""Local stand-ins for the systems runbook-bot operates, for the quick start and the tests.

Later issues add the Kubernetes API emulator, the moto launcher and the Slack and PagerDuty
API emulators here. Nothing in a production path imports this package (see .importlinter).
"""
