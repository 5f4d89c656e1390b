"""Shared step types and helpers for runbooks: runbooks import these, never each other.

- ``kube``: Kubernetes steps (``KubeStep``, ``ScaleDeployment``) and service lookups.
- ``aws``: AWS steps (``AwsStep``, ``SetNodeCapacity``).
- ``regions``: which region serves an environment now (DNS), for runbooks without --region.
- ``windows``: maintenance windows a runbook must work inside.
"""
