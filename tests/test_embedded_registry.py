"""The internal registry `primus-safe up` runs: only the platform (its generated htpasswd login,
kept in the data dir) may push; the platform's own imports still land there."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from drivers.oci_registry import RegistryAuthError, RegistryClient
from primus_safe.embedded import EmbeddedRegistry, internal_registry_services
from tests.conftest import Platform
from tests.fixtures.registry import Registry, running_registries, skopeo_digest, skopeo_push, small_image

EMBEDDED_PORT = 15014
SOURCE_PORT = 15015


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("embedded-source")
    with running_registries(root, {"source": (SOURCE_PORT, "", "")}) as started:
        skopeo_push(small_image(root / "small"), started["source"], "team/app:1")
        yield started["source"]


@pytest.fixture
async def embedded(platform: Platform, tmp_path: Path) -> AsyncIterator[EmbeddedRegistry]:
    """The embedded registry as `up` sets it up, with the running platform pointed at it."""
    settings = platform.settings.model_copy(update={"data_dir": tmp_path, "images_internal_registry": None})
    services = internal_registry_services(settings, EMBEDDED_PORT)
    assert len(services) == 1 and isinstance(services[0], EmbeddedRegistry)
    registry = services[0]
    fields = (
        "images_internal_registry",
        "images_internal_username",
        "images_internal_password",
        "images_internal_insecure",
    )
    saved = {name: getattr(platform.settings, name) for name in fields}
    await registry.start()
    try:
        for name in fields:
            setattr(platform.settings, name, getattr(settings, name))
        yield registry
    finally:
        for name, value in saved.items():
            setattr(platform.settings, name, value)
        await registry.stop()


async def test_anonymous_pushes_are_refused(embedded: EmbeddedRegistry, platform: Platform) -> None:
    username, password = embedded.credentials()
    assert username and len(password) >= 32
    assert platform.settings.images_internal_username == username
    assert platform.settings.images_internal_password == password
    for path in (embedded.htpasswd_path, embedded.credentials_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert password not in embedded.htpasswd_path.read_text()  # bcrypt, not the password
    assert embedded.htpasswd_path.read_text().startswith(f"{username}:$2")
    base = f"http://{embedded.host}/v2"
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{base}/")).status_code == 401
        assert (await http.post(f"{base}/evil/app/blobs/uploads/")).status_code == 401
        put = await http.put(
            f"{base}/sync/team/app/manifests/1",
            content=b"{}",
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert put.status_code == 401
        wrong = await http.post(f"{base}/evil/app/blobs/uploads/", auth=(username, "wrong-password"))
        assert wrong.status_code == 401
        assert (await http.get(f"{base}/", auth=(username, password))).status_code == 200
    async with RegistryClient(embedded.host, insecure=True) as anonymous:
        with pytest.raises(RegistryAuthError):
            await anonymous.push_blob("evil/app", "sha256:" + "0" * 64, b"")


async def test_the_platform_imports_into_it(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    embedded: EmbeddedRegistry,
    source: Registry,
) -> None:
    resp = await api.post(
        "/api/v1/image-registries",
        json={"name": "src", "url": f"http://{source.host}", "insecure": True},
        headers=admin,
    )
    assert resp.status_code == 200, resp.text
    answer = (
        await api.post("/api/v1/images:import", json={"source": f"{source.host}/team/app:1"}, headers=alice)
    ).json()
    assert answer["state"] == 1, answer
    for _ in range(600):
        details = (
            await api.get(f"/api/v1/images/{answer['imageId']}/importing-details", headers=alice)
        ).json()
        if details["status"] != "importing":
            break
        await asyncio.sleep(0.05)
    assert details["status"] == "ready", details
    username, password = embedded.credentials()
    async with RegistryClient(embedded.host, insecure=True, username=username, password=password) as own:
        stored = await own.manifest_digest(f"sync/127.0.0.1_{SOURCE_PORT}/team/app", "1")
    assert stored == skopeo_digest(source, "team/app:1")


async def test_credentials_are_kept_across_restarts(tmp_path: Path) -> None:
    first = EmbeddedRegistry(data_dir=tmp_path, port=EMBEDDED_PORT, binary="docker-registry")
    again = EmbeddedRegistry(data_dir=tmp_path, port=EMBEDDED_PORT, binary="docker-registry")
    assert first.credentials() == again.credentials()
    other = EmbeddedRegistry(data_dir=tmp_path / "other", port=EMBEDDED_PORT, binary="docker-registry")
    assert other.credentials()[1] != first.credentials()[1]
