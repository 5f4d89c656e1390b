"""Write base/configmap.yaml from config/example (tests/test_deploy.py keeps them equal).

python3 deploy/kubernetes/configmap.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


class _Literal(str):
    pass


def _literal(dumper: yaml.Dumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


def main() -> None:
    yaml.add_representer(_Literal, _literal)
    example = ROOT / "config" / "example"
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "runbook-bot-config", "namespace": "runbook-bot"},
        "data": {p.name: _Literal(p.read_text()) for p in sorted(example.glob("*.yaml"))},
    }
    head = "# Generated from config/example by deploy/kubernetes/configmap.py: edit there, rerun.\n"
    target = ROOT / "deploy" / "kubernetes" / "base" / "configmap.yaml"
    target.write_text(head + yaml.dump(doc, sort_keys=False, width=200))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
