"""Migration 0005 merges node_logs and cluster_logs into operation_logs, keeping every line."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text

from db.migrate import downgrade, upgrade
from tests.test_migrations import empty_database, sync_engine

__all__ = ["empty_database"]  # the fixture, parametrised over SQLite and PostgreSQL

AT = datetime(2026, 12, 1, 10, 0, 0)
NODE_COLUMNS = {
    "hostname": "",
    "public_ip": "",
    "port": 22,
    "labels": "{}",
    "taints": "[]",
    "flavor_id": "f",
    "template_id": "t",
    "ssh_secret_id": "s",
    "cluster_id": "",
    "workspace_id": "",
    "is_control_plane": False,
    "phase": "Ready",
    "step": "",
    "message": "",
    "host_key_fingerprint": "",
    "facts_problem": "",
    "addons_template_id": "",
    "addons_done": "[]",
    "addons_installed": False,
    "onboarded": True,
    "created_by": "root",
    "created_at": AT,
    "updated_at": AT,
}
CLUSTER_COLUMNS = {
    "description": "",
    "labels": "{}",
    "is_protected": False,
    "provisioner": "hosts",
    "control_plane_nodes": "[]",
    "ssh_secret_id": "s",
    "image_secret_id": "",
    "kube_spray_image": "",
    "kube_pods_subnet": "",
    "kube_service_address": "",
    "kube_network_plugin": "flannel",
    "kube_version": "1.32.0",
    "kube_api_server_args": "{}",
    "phase": "Ready",
    "step": "",
    "message": "",
    "endpoint": "",
    "kubeconfig_encrypted": "",
    "work_dir": "",
    "created_by": "root",
    "created_at": AT,
    "updated_at": AT,
}
# (table, owner column, owner id, lines), interleaved so ordering by id alone would mix owners
OLD_LINES = [
    ("node_logs", "node_id", "n1", "node one: first"),
    ("cluster_logs", "cluster_id", "c1", "cluster: first"),
    ("node_logs", "node_id", "n2", "node two: only"),
    ("node_logs", "node_id", "n1", "node one: second"),
    ("cluster_logs", "cluster_id", "c1", "cluster: second"),
    ("node_logs", "node_id", "n1", "node one: third"),
]


def insert(conn: object, table: str, values: dict[str, object]) -> None:
    names = ", ".join(values)
    marks = ", ".join(f":{k}" for k in values)
    conn.execute(text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), values)  # type: ignore[attr-defined]


def old_lines(url: str) -> list[tuple[str, str, str]]:
    with sync_engine(url) as engine, engine.connect() as conn:
        rows = [
            *conn.execute(text("SELECT 'node_logs', node_id, line FROM node_logs ORDER BY id")),
            *conn.execute(text("SELECT 'cluster_logs', cluster_id, line FROM cluster_logs ORDER BY id")),
        ]
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def merged_lines(url: str) -> dict[tuple[str, str], list[str]]:
    with sync_engine(url) as engine, engine.connect() as conn:
        rows = conn.execute(
            text("SELECT resource_type, resource_id, line, level FROM operation_logs ORDER BY id")
        ).all()
    merged: dict[tuple[str, str], list[str]] = {}
    for kind, owner, line, level in rows:
        assert level == "INFO"
        merged.setdefault((kind, owner), []).append(line)
    return merged


def test_log_tables_merge_and_split_keeping_lines(empty_database: str) -> None:
    upgrade(empty_database, "0004")
    with sync_engine(empty_database) as engine, engine.begin() as conn:
        for node_id in ("n1", "n2"):
            insert(
                conn,
                "nodes",
                {"id": node_id, "node_name": node_id, "private_ip": f"10.{node_id}", **NODE_COLUMNS},
            )
        insert(conn, "clusters", {"id": "c1", **CLUSTER_COLUMNS})
        for table, owner, owner_id, line in OLD_LINES:
            insert(conn, table, {owner: owner_id, "created_at": AT, "level": "INFO", "line": line})
    before = old_lines(empty_database)

    upgrade(empty_database, "0005")
    expected = {
        ("node", "n1"): ["node one: first", "node one: second", "node one: third"],
        ("node", "n2"): ["node two: only"],
        ("cluster", "c1"): ["cluster: first", "cluster: second"],
    }
    assert merged_lines(empty_database) == expected

    downgrade(empty_database, "0004")
    assert old_lines(empty_database) == before

    upgrade(empty_database, "head")
    assert merged_lines(empty_database) == expected
