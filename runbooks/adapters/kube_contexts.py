"""Which Kubernetes cluster each configured context names, checked without the SDK.

A deployed bot reaches every region's cluster through a kubeconfig with one context per region
(the Secret the kustomize base mounts); only a context named ``in-cluster`` uses the service
account of the pod the bot runs in. A context that cannot be resolved makes the bot unready
and ``config.check`` exit 2, naming it: a bot in us-east-1 must never send "us-west-2" calls
to its own cluster because a kubeconfig was missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

#: The context name that means "the cluster this bot runs in" (its service account). Only a
#: context named so uses the in-cluster configuration: any other is looked up in the
#: kubeconfig, and a missing one is an error, never a silent fall-back to the local cluster.
IN_CLUSTER = "in-cluster"
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


CONTEXT_HINT = (
    "each region's context must be in the kubeconfig (deployed: the Secret "
    "runbook-bot-kubeconfig the kustomize base mounts at KUBECONFIG="
    "/var/run/runbook-bot/kube/config; in the sandbox, run "
    "`python3 dev.py serve` first), or be named in-cluster for the cluster the bot runs in"
)


def context_problems(contexts: dict[str, str], kubeconfig: str | None) -> list[str]:
    """What stops each context from resolving (``contexts``: where it is used → its name),
    without connecting: the kubeconfig has it, or in-cluster has a service account."""
    problems: list[str] = []
    names: set[str] | None = None
    if kubeconfig is not None:
        try:
            loaded = yaml.safe_load(Path(kubeconfig).read_text()) or {}
            names = {str(c.get("name")) for c in loaded.get("contexts") or []}
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            problems.append(f"kubeconfig {kubeconfig} cannot be read: {exc}")
            names = set()
    for where, context in contexts.items():
        if context == IN_CLUSTER:
            if not os.environ.get("KUBERNETES_SERVICE_HOST") or not SERVICE_ACCOUNT_TOKEN.exists():
                problems.append(
                    f"{where}: context in-cluster, but this process does not run in a "
                    "Kubernetes pod with a service account"
                )
        elif names is None:
            problems.append(
                f"{where}: context {context!r} cannot be resolved: no kubeconfig "
                "(KUBECONFIG is not set and ~/.kube/config does not exist)"
            )
        elif context not in names:
            problems.append(
                f"{where}: context {context!r} is not in the kubeconfig {kubeconfig} "
                f"(it has {', '.join(sorted(names)) or 'no contexts'})"
            )
    return problems
