"""Write base/prometheusrule.yaml from deploy/prometheus/rules.yaml (tests/test_deploy.py keeps
them equal): the same alerting rules as a Prometheus Operator ``PrometheusRule``.

python3 deploy/kubernetes/prometheusrule.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "runbook-bot-rules",
            "namespace": "runbook-bot",
            # The Prometheus's ruleSelector must select this label (docs/alerts.md).
            "labels": {"role": "alert-rules"},
        },
        "spec": {"groups": rules["groups"]},
    }
    head = (
        "# Generated from deploy/prometheus/rules.yaml by deploy/kubernetes/prometheusrule.py:"
        " edit there, rerun.\n"
    )
    target = ROOT / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml"
    target.write_text(head + yaml.safe_dump(doc, sort_keys=False, width=200))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
