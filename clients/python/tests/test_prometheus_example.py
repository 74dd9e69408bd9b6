"""examples/prometheus-alerts.yml parses, and names only metrics the server exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (ci.sh installs it)")

REPO_ROOT = Path(__file__).resolve().parents[3]
RULES = REPO_ROOT / "examples" / "prometheus-alerts.yml"
METRICS_RS = REPO_ROOT / "src" / "metrics.rs"


def exported() -> set[str]:
    return set(re.findall(r'"(privledger_[a-z_]+)"', METRICS_RS.read_text()))


def test_every_rule_names_exported_metrics():
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert rules
    known = exported()
    assert "privledger_alerts_total" in known
    for r in rules:
        assert r["alert"] and r["expr"]
        used = set(re.findall(r"privledger_[a-z_]+", r["expr"]))
        assert used, r["alert"]
        assert used <= known, f"{r['alert']}: {used - known} are not exported"
