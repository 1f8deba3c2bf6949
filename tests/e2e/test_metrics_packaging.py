"""packaging/: the Prometheus alert rules (promtool, the real one) and the Grafana dashboard
name only metrics dkimd exports, and the rules fire when they should."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dkimd.config.values import Action, Condition
from dkimd.dkim.results import DkimResult, SignatureResult
from dkimd.metrics.exporter import PrometheusRecorder
from support.tools import require

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "packaging" / "dkimd-alerts.yml"
DASHBOARD = ROOT / "packaging" / "grafana-dkimd.json"
RULE_TESTS = ROOT / "tests" / "data" / "metrics" / "alerts-test.yml"

_NAME = re.compile(r"\bdkimd_[a-z_]+")


def exported_names() -> set[str]:
    """Every sample name the exporter writes once each kind of event has happened."""
    registry = CollectorRegistry()
    rec = PrometheusRecorder(registry, frozenset({"example.net"}))
    rec.connection_opened()
    rec.message_verified(0.0, [SignatureResult(DkimResult.PASS, domain="example.net")])
    rec.on_action(Condition.DNS_ERROR, Action.TEMPFAIL)
    rec.dns_lookup("ok", 0.01)
    rec.dns_cache(True)
    rec.dns_cache(False)
    rec.key_load_error()
    rec.config_loaded(True, reload=True)
    names = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        names |= {s.name for s in family.samples}
    # Signatures added: a child only once a signature is (a real SigningRequest needs a key).
    return names | {"dkimd_signatures_added_total"}


def test_rules_and_dashboard_use_exported_metrics_only() -> None:
    exported = exported_names()
    for path in (RULES, DASHBOARD):
        used = set(_NAME.findall(path.read_text()))
        assert used, path
        assert used <= exported, f"{path.name}: {sorted(used - exported)}"
    dashboard = json.loads(DASHBOARD.read_text())
    assert all(p["targets"] for p in dashboard["panels"])
    # Every family the exporter has is on the dashboard.
    families = {_family(n) for n in exported if not n.endswith("_created")}
    shown = {_family(n) for n in _NAME.findall(DASHBOARD.read_text())}
    assert families <= shown, sorted(families - shown)


def _family(sample_name: str) -> str:
    return re.sub(r"_(total|bucket|count|sum)$", "", sample_name)


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = require("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 5 rules found" in check.stdout
    run = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
