"""Deployment files: well-formed, valid Kubernetes objects, and consistent with the code they run."""

from __future__ import annotations

import logging
import os
import shlex
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from primus_safe.cli import app
from primus_safe.settings import Settings, TaskQueues

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in documents(DEPLOY / name)]


def workloads() -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc["kind"] in ("Deployment", "Job")]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def config_env() -> dict[str, str]:
    """Every PRIMUS_* variable the ConfigMap and the Secret set."""
    env: dict[str, str] = {}
    for doc in manifests():
        if doc["kind"] == "ConfigMap":
            env.update(doc["data"])
        if doc["kind"] == "Secret":
            env.update(doc["stringData"])
    return env


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_a_valid_kubernetes_object(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    if doc["kind"] != "Namespace":
        assert doc["metadata"]["namespace"] == "primus-safe"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI's callback reconfigures root logging onto CliRunner's stream, closed after invoke."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_every_container_runs_a_real_cli_command() -> None:
    runner = CliRunner()
    seen = set()
    for doc in workloads():
        for container in containers(doc):
            if "command" in container:  # a shell line of primus-safe invocations
                lines = container["command"][-1].split("&&")
                invocations = [shlex.split(line)[1:] for line in lines]
                assert all(shlex.split(line)[0] == "primus-safe" for line in lines)
            else:  # args to the image's `primus-safe` entrypoint
                invocations = [container["args"]]
            for argv in invocations:
                result = runner.invoke(app, [*argv, "--help"])
                where = f"{doc['metadata']['name']}: primus-safe {' '.join(argv)}"
                assert result.exit_code == 0, f"{where}: {result.output}"
                seen.add(argv[0])
    assert {"api", "worker", "db", "create-admin"} <= seen


def test_environment_names_are_real_settings() -> None:
    fields = set(Settings.model_fields)
    queue_fields = set(TaskQueues.model_fields)
    for name in config_env():
        key = name.removeprefix("PRIMUS_").lower()
        assert key in fields or key.removeprefix("queue_") in queue_fields, f"{name} is not a setting"
    for required in ("PRIMUS_DATABASE_URL", "PRIMUS_SECRET_KEY", "PRIMUS_TEMPORAL_ADDRESS"):
        assert required in config_env()


def test_every_workload_gets_config_and_secret() -> None:
    for doc in workloads():
        for container in containers(doc):
            refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert refs == {"primus-safe-config", "primus-safe-secrets"}, doc["metadata"]["name"]


def test_placeholder_secret_key_is_refused() -> None:
    """Applying the manifests unedited must not run with a known key."""
    from primus_safe.settings import SettingsError

    with pytest.raises(SettingsError):
        Settings(secret_key=config_env()["PRIMUS_SECRET_KEY"]).encryption_key()


def test_api_ports_and_probes_match_the_app() -> None:
    from api.routes.system import router

    paths = {route.path for route in router.routes}  # type: ignore[attr-defined]
    port = int(config_env()["PRIMUS_API_PORT"])
    api = next(d for d in manifests() if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("api"))
    (container,) = containers(api)
    assert container["ports"][0]["containerPort"] == port
    assert container["readinessProbe"]["httpGet"]["path"] in paths
    assert container["livenessProbe"]["httpGet"]["path"] in paths
    service = next(d for d in manifests() if d["kind"] == "Service")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    include_line = next(line for line in pyproject.splitlines() if line.startswith("include = "))
    for pattern in yaml.safe_load(include_line.removeprefix("include = ")):
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in dockerfile, f"{package} missing from the image"


def test_temporal_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.temporal.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgresql", "temporal", "temporal-ui"}
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/auto-setup:")
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] in services
    assert "postgresql" in temporal["depends_on"]
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    volumes = {v.split(":")[0] for v in services["postgresql"]["volumes"]}
    assert volumes <= set(compose["volumes"])
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{port} would listen on every interface"


def test_ci_script() -> None:
    script = ROOT / ".ci" / "run"
    assert script.stat().st_mode & stat.S_IXUSR
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert "PRIMUS_TEST_POSTGRES_URL" in text and "postgresql://postgres@127.0.0.1:5432/test" in text
    assert "make test" in text
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_makefile_targets() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    dry_test = subprocess.run(
        ["make", "-n", "-B", "test"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    for step in ("-m venv", "pip install --quiet -e '.[test]'", "ruff check .", "bin/pytest", "apt-get"):
        assert step in dry_test, step
    for package in ("openssh-server", "docker-registry", "skopeo", "python3-venv"):
        assert package in dry_test, package
    dry_up = subprocess.run(
        ["make", "-n", "-B", "up"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "pip install --quiet -e ." in dry_up
    assert "primus-safe up --data-dir ./data" in dry_up


def test_readme_opens_with_the_two_commands_and_links_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    heading, blank, fence, *rest = readme.splitlines()
    assert heading.startswith("# ") and blank == "" and fence.startswith("```")
    first_block = rest[: rest.index("```")]
    assert [line.split("#")[0].strip() for line in first_block] == ["make up", "make test"]
    for doc in ("docs/architecture.md", "docs/operations.md", "deploy/README.md"):
        assert doc in readme and (ROOT / doc).is_file()


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        variable = f"PRIMUS_{name.upper()}"
        if name != "queues":
            assert variable in readme, f"add {variable} to the settings table in README.md"
    for name in TaskQueues.model_fields:
        assert f"PRIMUS_QUEUE_{name.upper()}" in readme, name
