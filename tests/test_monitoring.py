"""The spec's monitoring as code, checked by Prometheus's and Alertmanager's own tools:
``promtool`` checks the alerting rules and runs their unit tests (deploy/prometheus/
rules.test.yaml: each threshold fires above it and not below, for the right labels);
``amtool`` checks the Alertmanager example and routes the rollback triggers to the bot and
nothing else to it. The triggers' names are exactly those config/alerts.yaml maps to
``rollback``, and they keep the labels its parameters need."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from runbooks.engine.config.loader import load_config
from tests.conftest import ROOT
from tests.support.monitoring import need

RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yaml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {
        rule["alert"]: {**rule, "group": group["name"]}
        for group in doc["groups"]
        for rule in group["rules"]
    }


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    promtool = need("promtool")["promtool"]
    checked = tool(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    tested = tool(promtool, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every rule is exercised by a unit test.
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    exercised = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert exercised == set(rules())


def test_the_triggers_are_the_alerts_the_bot_maps_with_the_labels_it_needs() -> None:
    alerts = load_config(ROOT / "config").alerts
    triggers = {name for name, rule in rules().items() if rule["group"].endswith("triggers")}
    mapped = {
        name for route in alerts.routes if route.runbook == "rollback" for name in route.alerts
    }
    assert triggers == mapped == {"HighErrorRate", "HighLatencyP95", "HealthCheckFailing"}
    # The route's parameters are filled from these labels; the unit tests expect each firing
    # trigger with them.
    (route,) = [r for r in alerts.routes if r.runbook == "rollback"]
    needed = {"environment", "service", "region"}
    assert {str(v).strip("{}?") for v in route.params.values()} == needed
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            if case["alertname"] in triggers:
                for alert in case["exp_alerts"]:
                    assert needed <= set(alert["exp_labels"]), alert
                    assert alert["exp_labels"]["trigger"] == "rollback"


def test_amtool_checks_the_alertmanager_example_and_its_routes() -> None:
    amtool = need("amtool")["amtool"]
    checked = tool(amtool, "check-config", str(ALERTMANAGER))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout

    def receivers(*labels: str) -> str:
        routed = tool(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
        assert routed.returncode == 0, routed.stderr
        return routed.stdout.strip()

    for name, rule in rules().items():
        labels = [f"alertname={name}", "environment=production", "region=us-east-1"]
        labels += [f"{k}={v}" for k, v in (rule.get("labels") or {}).items()]
        expected = "runbook-bot,people" if rule["group"].endswith("triggers") else "people"
        assert receivers(*labels) == expected, name
    # A trigger's name alone (without the rules' label) does not reach the bot.
    assert receivers("alertname=HighErrorRate", "environment=production") == "people"
