"""deploy/: Kubernetes manifests against the API schemas, the shipped nginx.conf with TLS
through ``nginx -t``, and the alert rules and dashboard only naming metrics that exist."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.metrics import CallMetrics
from tests.cluster import free_port, nginx_test

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                found.append((path.name, doc))
    return found


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_are_valid(version: str) -> None:
    docs = manifests()
    assert {doc["kind"] for _, doc in docs} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
    }
    for name, doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises with the reason
        assert doc["metadata"]["name"], name
    kustomize = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomize["resources"]:
        assert (DEPLOY / "k8s" / resource).is_file()


def test_pods_drain_before_they_are_killed() -> None:
    docs = {doc["kind"]: doc for _, doc in manifests() if doc["metadata"]["name"] == "voice-agent"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    drain = float(docs["ConfigMap"]["data"]["DRAIN_SECONDS"])
    goodbye_s = 20  # the goodbye line, disconnect, and the node closing its side
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[-1]) + drain + goodbye_s
    assert docs["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    metrics = docs["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Pods", "Resource"]
    assert metrics[0]["pods"]["metric"]["name"] == "voice_active_calls"


def test_compose_stop_grace_outlasts_the_drain() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"nginx", "postgres", "prometheus", "voice-1", "voice-2", "voice-3"} <= set(services)
    nginx_conf = (DEPLOY / "nginx.conf").read_text()
    for name in ("voice-1", "voice-2", "voice-3"):
        voice = services[name]
        assert f"server {name}:8000" in nginx_conf
        assert float(voice["stop_grace_period"].rstrip("s")) > float(
            voice["environment"]["DRAIN_SECONDS"]
        )
        assert voice["environment"]["DATABASE_URL"].startswith("postgresql://")
    nginx_ip = services["nginx"]["networks"]["voice"]["ipv4_address"]
    assert services["voice-1"]["environment"]["TRUSTED_PROXIES"] == f"{nginx_ip}/32"


def test_the_shipped_nginx_conf_passes_nginx_t_with_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        [*openssl, "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    text = (DEPLOY / "nginx.conf").read_text()
    text = re.sub(r"server voice-\d+:8000", "server 127.0.0.1:8000", text)
    text = text.replace("/etc/nginx/certs/", f"{tmp_path}/")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{free_port()};")
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{free_port()} ssl;")
    text = re.sub(r"listen \[::\]:\d+( ssl)?;", "", text)
    assert nginx_test(text, tmp_path) == ""


def _exposed_names() -> set[str]:
    metrics = CallMetrics()
    names = set()
    for family in metrics.registry.collect():
        for suffix in ("", "_total", "_bucket", "_count", "_sum"):
            names.add(family.name + suffix)
    return names


def test_alerts_and_dashboard_use_only_metrics_that_exist() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {"VoiceRepliesSlow", "VoiceProviderErrorRate", "VoiceNoReadyProcesses"} <= set(alerts)
    assert "> 1.5" in alerts["VoiceRepliesSlow"] and "0.95" in alerts["VoiceRepliesSlow"]
    dashboard = json.loads((DEPLOY / "grafana" / "voice-agent-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in [*alerts.values(), *exprs] for m in re.findall(r"\bvoice_\w+", e)}
    assert used and used <= _exposed_names(), used - _exposed_names()
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
