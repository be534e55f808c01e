"""The layer rules (import-linter contracts in pyproject.toml) hold on the tree and catch a break.

`make lint` runs the same `lint-imports`; here it runs on the real tree, and on a copy of the
packages with one deliberately wrong import per contract, which must fail naming that contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "activities", "workflows", "db", "domain", "drivers", "primus_safe")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` of this environment on the project in `cwd` (its own pyproject.toml)."""
    script = Path(sys.executable).with_name("lint-imports")
    command = str(script) if script.exists() else shutil.which("lint-imports")
    assert command, "lint-imports is not installed (pip install -e '.[test]')"
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the packages in `cwd`, never an installed copy
    return subprocess.run(
        [command, "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_keeps_every_layer_rule() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract", "edge"),
    [
        (
            "domain/names.py",
            "import primus_safe.settings",
            "domain imports no other package of the project",
            "domain.names -> primus_safe.settings",
        ),
        ("drivers/ssh.py", "import db.session", "drivers import only domain", "drivers.ssh -> db.session"),
        ("db/urls.py", "import drivers.ssh", "db imports only domain", "db.urls -> drivers.ssh"),
        (
            "workflows/common.py",
            "import activities.users",
            "workflows import only domain (and the activity classes they call by method)",
            "workflows.common -> activities.users",
        ),
        (
            "activities/users.py",
            "import api.deps",
            "activities never import api",
            "activities.users -> api.deps",
        ),
        (
            "api/routes/clusters.py",
            "from db import node_status",
            "api never writes a status (the status owners are called from activities only)",
            "api.routes.clusters -> db.node_status",
        ),
        (
            "drivers/execution.py",
            "from primus_safe.settings import get_settings",
            "only the composition root (primus_safe) and api read settings",
            "drivers.execution -> primus_safe.settings",
        ),
    ],
)
def test_a_wrong_import_fails_naming_its_contract(
    tmp_path: Path, module: str, wrong_import: str, contract: str, edge: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{wrong_import}  # deliberately wrong\n")

    result = lint_imports(tmp_path)
    print(result.stdout)  # the message as `make lint` shows it
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
    assert f"-   {edge} (l." in result.stdout
