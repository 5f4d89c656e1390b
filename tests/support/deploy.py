"""The kustomize overlays rendered with kubectl, and their objects by kind."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl")


def render(
    overlay: str, *, components: tuple[str, ...] = (), scratch: Path | None = None
) -> list[dict[str, Any]]:
    """An overlay rendered by kustomize; with ``components``, as an overlay of it that lists
    those optional components (written under ``scratch``) would be."""
    if KUBECTL is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have kubectl (its kustomize renders deploy/kubernetes)")
        pytest.skip(
            "kubectl is not installed: these run wherever it is (this project's machines and CI "
            "have kubectl 1.32; the Kubernetes tests use it as their oracle too)"
        )
    target = DEPLOY / "overlays" / overlay
    if components:
        assert scratch is not None, "an overlay with components is written under scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        # kustomize refuses absolute paths to other kustomizations: relative ones.
        up = os.path.relpath(DEPLOY, scratch)
        (scratch / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "resources": [f"{up}/overlays/{overlay}"],
                    "components": [f"{up}/components/{c}" for c in components],
                }
            )
        )
        target = scratch
    out = subprocess.run(
        [KUBECTL, "kustomize", str(target)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]
