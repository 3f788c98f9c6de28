"""deploy/observability: the alert rules pass promtool and their own unit tests (each alert
fires on its trigger and stays quiet on a healthy system), the dashboard's queries are
valid PromQL covering the seed's metrics, and every metric either names one the
services emit or one RabbitMQ's exporter does — so a renamed metric breaks this test,
not a dashboard in production."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import yaml

from deploy_support import DEPLOY, emitted_metric_names, promtool, run, tool

OBSERVABILITY = DEPLOY / "observability"
RULES = OBSERVABILITY / "prometheus-rules.yaml"
RULE_TESTS = OBSERVABILITY / "prometheus-rules.test.yaml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"

# The alerts the deployment promises (issue 8): dead letters present, submitter paused,
# ingress 503 rate, persister lag, oldest due queue row.
REQUIRED_ALERTS = {
    "CallbridgeDeadLettersPresent",
    "CallbridgeSubmitterPaused",
    "CallbridgeIngressUnavailable",
    "CallbridgePersisterLagging",
    "CallbridgeOldestDueQueueRow",
}
# The metrics the dashboard must show (names from the seed, plus
# callback_end_to_end_seconds).
REQUIRED_METRICS = {
    "call_submissions_total",
    "call_duration_seconds",
    "active_batches",
    "callback_processing_time_seconds",
    "callback_end_to_end_seconds",
}
# Gauges every replica reports for the whole database (each persister counts the same
# active batches, each submitter the same queue rows): a panel must read the same with two
# replicas as with one, so it takes their max, never their sum.
DATABASE_WIDE_GAUGES = {
    "active_batches": "callbridge-persister",
    "local_call_queue_rows": "callbridge-submitter",
    "local_call_queue_oldest_due_seconds": "callbridge-submitter",
}
# Metrics that come from elsewhere: Prometheus itself, RabbitMQ's rabbitmq_prometheus.
EXTERNAL_METRICS = {"up"}
EXTERNAL_PREFIXES = ("rabbitmq_",)
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels += [panel, *panel.get("panels", [])]
    return panels


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables given plain values."""
    return expr.replace("$__rate_interval", "5m").replace("$job", ".*")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers left after removing strings, label
    matchers, range selectors and grouping clauses, that are not calls or keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return {name for name in names if name.lower() not in PROMQL_KEYWORDS}


def base_metric(name: str) -> str:
    """A histogram's series (`_bucket`, `_sum`, `_count`) belong to its metric."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


def test_rules_pass_promtool_check():
    run([promtool(), "check", "rules", str(RULES)])


def test_alerts_fire_on_their_triggers_and_not_on_a_healthy_system():
    run([promtool(), "test", "rules", RULE_TESTS.name], cwd=OBSERVABILITY)


def test_every_promised_alert_exists_and_its_unit_tests_make_it_fire():
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert REQUIRED_ALERTS <= alerts
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == alerts, f"alerts without a test that fires them: {sorted(alerts - fired)}"
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboard_queries_are_valid_promql(tmp_path):
    exprs = dashboard_exprs()
    assert exprs
    # promtool has no query checker of its own: check the queries as recording rules.
    recording = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{index}", "expr": as_promql(expr)}
        for index, expr in enumerate(exprs)
    ]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(recording))
    run([promtool(), "check", "rules", str(path)])


def test_dashboard_is_a_well_formed_grafana_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in dashboard_panels():
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def test_dashboard_covers_the_spec_metrics_and_ingress_results_by_reason():
    used = {base_metric(name) for expr in dashboard_exprs() for name in metric_names(expr)}
    missing = sorted(REQUIRED_METRICS - used)
    assert not missing, f"missing from the dashboard: {missing}"
    assert any("by (outcome)" in expr for expr in dashboard_exprs())


def test_database_wide_gauges_read_the_same_with_two_replicas_as_with_one(tmp_path):
    exprs = [e for e in dashboard_exprs() if metric_names(e) & DATABASE_WIDE_GAUGES.keys()]
    assert {name for e in exprs for name in metric_names(e)} >= DATABASE_WIDE_GAUGES.keys()
    # Two replicas of each service, both reporting 7 (needs_review matches every panel's
    # filter); each panel's query must then evaluate to 7, not 14.
    series = [
        {
            "series": f'{gauge}{{job="{job}",instance="{job}-{replica}:9100",queue_status="needs_review"}}',
            "values": "7x10",
        }
        for gauge, job in DATABASE_WIDE_GAUGES.items()
        for replica in ("a", "b")
    ]
    tests = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": series,
        "promql_expr_test": [
            {
                "expr": f"count(({as_promql(expr)}) == 7)",
                "eval_time": "5m",
                "exp_samples": [{"labels": "{}", "value": 1}],
            }
            for expr in exprs
        ],
    }]}
    path = tmp_path / "replicas.test.yaml"
    path.write_text(yaml.safe_dump(tests))
    run([promtool(), "test", "rules", path.name], cwd=tmp_path)


def test_every_metric_used_is_one_the_services_emit():
    emitted = emitted_metric_names()
    exprs = dashboard_exprs() + [rule["expr"] for rule in rules()]
    unknown = set()
    for expr in exprs:
        for name in metric_names(expr):
            if name in EXTERNAL_METRICS or name.startswith(EXTERNAL_PREFIXES):
                continue
            if name not in emitted and base_metric(name) not in emitted:
                unknown.add(name)
    assert not unknown, f"no crate emits {sorted(unknown)}"


def test_metric_name_extraction_finds_selectors_not_functions_or_labels():
    expr = 'sum by (le) (rate(a_seconds_bucket{job=~"x|y", outcome="b"}[5m])) / max(c_total) > 0 or d'
    assert metric_names(expr) == {"a_seconds_bucket", "c_total", "d"}


def test_observability_kustomization_renders_valid_configmaps():
    out = run([tool("kubectl"), "kustomize", str(OBSERVABILITY)]).stdout
    docs = [doc for doc in yaml.safe_load_all(out) if doc]
    assert {doc["metadata"]["name"] for doc in docs} == {
        "callbridge-grafana-dashboard", "callbridge-prometheus-rules"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    dashboard = next(d for d in docs if d["metadata"]["name"] == "callbridge-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["callbridge.json"]) == json.loads(DASHBOARD.read_text())
    rules_map = next(d for d in docs if d["metadata"]["name"] == "callbridge-prometheus-rules")
    assert rules_map["data"]["callbridge.rules.yaml"] == RULES.read_text()

