"""The kustomize overlays rendered with kubectl, and their objects by kind."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl")


def render(overlay: str) -> list[dict[str, Any]]:
    if KUBECTL is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have kubectl (its kustomize renders deploy/kubernetes)")
        pytest.skip(
            "kubectl is not installed: these run wherever it is (this project's machines and CI "
            "have kubectl 1.32; the Kubernetes tests use it as their oracle too)"
        )
    out = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]
