"""deploy/: the Kubernetes manifests validated offline against the Kubernetes API's schemas
(kubernetes-validate bundles them; the network is cut while it runs), the fields a replica needs
to drain and to be probed, and the Dockerfile read as text (no Docker daemon here or in CI, and an
image build would be too slow for the suite).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from converter.config import load_settings
from converter.server.app import create_app

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.30"  # the oldest release the manifests are meant for (autoscaling/v2, policy/v1)
MANIFESTS = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[str, dict[str, Any]]:
    """Every manifest by kind (one object of each kind)."""
    found: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in documents(path):
            assert doc["kind"] not in found, f"{path.name}: a second {doc['kind']}"
            found[doc["kind"]] = doc
    return found


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_is_valid_for_the_kubernetes_api_offline(path: Path, no_network: None) -> None:
    for doc in documents(path):
        # strict: a misspelt or misplaced field is an error, not silently ignored as the API server would
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_field_fails_the_validation(no_network: None) -> None:
    deployment = resources()["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    broken = {**deployment, "spec": {**deployment["spec"], "template": {
        **deployment["spec"]["template"], "spec": {**deployment["spec"]["template"]["spec"], "containers": [
            {**container, "readinesProbe": None, "readynessProbe": container["readinessProbe"]}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    listed = set(documents(KUBERNETES / "kustomization.yaml")[0]["resources"])
    assert listed == {p.name for p in MANIFESTS} - {"secret.example.yaml"}


def test_the_deployment_probes_drains_and_takes_its_secrets_from_the_secret() -> None:
    found = resources()
    pod = found["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # the balancer stops sending before SIGTERM, and the grace period covers the drain of the longest call
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and int(pre_stop[1]) >= 5
    config = yaml.safe_load(found["ConfigMap"]["data"]["config.yaml"])
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + config["upstream"]["timeout"]
    assert found["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # secrets: referenced from the Secret, never written in the ConfigMap
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert {"SESSION_KEY", "CLIENT_SECRET", "REDIS_PASSWORD"} <= refs.keys()
    secret = found["Secret"]
    assert all(ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
               for ref in refs.values())
    text = found["ConfigMap"]["data"]["config.yaml"]
    for name in refs:
        assert f"${{{name}" in text
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert f"{mount['mountPath']}/config.yaml" in container["args"]


def test_the_service_hpa_and_pdb_point_at_the_deployment() -> None:
    found = resources()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert found["Deployment"]["spec"]["selector"]["matchLabels"] == labels
    assert found["Service"]["spec"]["selector"] == labels
    assert found["Service"]["spec"]["sessionAffinity"] == "None"  # sealed sessions need none
    assert found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    target = found["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", found["Deployment"]["metadata"]["name"])
    assert found["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    port = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert found["Service"]["spec"]["ports"][0]["targetPort"] == port["name"]


def test_the_configmap_config_loads_with_the_secrets_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SESSION_KEY": "k" * 44, "CLIENT_SECRET": "s", "REDIS_PASSWORD": "p"}.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "config.yaml"
    path.write_text(resources()["ConfigMap"]["data"]["config.yaml"])
    settings = load_settings(str(path))
    assert [k.get_secret_value() for k in settings.server.session_keys] == ["k" * 44]
    assert settings.redis is not None and "p@redis" in settings.redis.url.get_secret_value()
    assert settings.auth is not None


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), as (INSTRUCTION, arguments)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, user  # numeric: runAsNonRoot can check it
    assert int(user) == resources()["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]


def test_the_image_healthcheck_asks_a_route_the_server_has() -> None:
    [check] = [args for word, args in final_stage() if word == "HEALTHCHECK"]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[a-z]+)", check)
    assert url is not None, check
    port, path = url.groups()
    assert [args for word, args in final_stage() if word == "EXPOSE"] == [port]
    assert f'"--port", "{port}"' in next(args for word, args in final_stage() if word == "CMD")
    app = create_app(load_settings(str(ROOT / "specs" / "marketplace-tools.yaml")))  # inline tools: no spec to fetch
    assert path in {getattr(route, "path", None) for route in app.routes}


def test_the_image_installs_the_project_with_the_lock_as_constraints() -> None:
    run = " ".join(args for word, args in dockerfile() if word == "RUN")
    assert "requirements/dev.lock" in run and "-c /tmp/constraints.txt" in run
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "!converter/" in ignored and "!requirements/" in ignored
