"""The OCI registry client against real docker-registry instances (one behind htpasswd auth)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.images import OCI_INDEX, OCI_MANIFEST
from drivers.oci_registry import (
    AddressRefused,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryNotFound,
    address_guard,
    sha256_digest,
)
from tests.fixtures.registry import (
    Registry,
    TokenServer,
    multi_arch_image,
    running_registries,
    skopeo_digest,
    skopeo_push,
    small_image,
    start_registry,
)

PORTS = {"plain": (15000, "", ""), "locked": (15001, "puller", "s3cret-pass")}


@pytest.fixture(scope="module")
def regs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Registry]]:
    root = tmp_path_factory.mktemp("oci-registries")
    with running_registries(root, PORTS) as started:
        skopeo_push(small_image(root / "small"), started["plain"], "lib/small:1")
        skopeo_push(multi_arch_image(root / "multi"), started["plain"], "lib/multi:1", all_platforms=True)
        skopeo_push(small_image(root / "small"), started["locked"], "private/small:1")
        yield started


def client(reg: Registry, **kw: object) -> RegistryClient:
    return RegistryClient(reg.host, insecure=True, **kw)  # type: ignore[arg-type]


async def test_manifests_index_and_digests(regs: dict[str, Registry]) -> None:
    async with client(regs["plain"]) as c:
        await c.ping()
        single = await c.get_manifest("lib/small", "1")
        assert single.media_type == OCI_MANIFEST
        assert single.digest == skopeo_digest(regs["plain"], "lib/small:1")
        index = await c.get_manifest("lib/multi", "1")
        assert index.media_type == OCI_INDEX
        assert index.digest == skopeo_digest(regs["plain"], "lib/multi:1")
        assert await c.manifest_digest("lib/multi", "1") == index.digest
        assert await c.manifest_digest("lib/multi", "nope") is None
        with pytest.raises(RegistryNotFound, match="MANIFEST_UNKNOWN"):
            await c.get_manifest("lib/small", "nope")


async def test_blob_upload_chunked_monolithic_mount_and_delete(regs: dict[str, Registry]) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = sha256_digest(data)
    async with client(regs["plain"]) as c:
        assert await c.blob_size("up/a", digest) is None
        location = await c.start_upload("up/a")
        step = 1024 * 1024
        offset = 0
        while offset < len(data):
            location = await c.upload_chunk("up/a", location, offset, data[offset : offset + step])
            offset = min(offset + step, len(data))
            assert await c.upload_offset("up/a", location) == offset
        await c.finish_upload("up/a", location, digest)
        assert await c.blob_size("up/a", digest) == len(data)
        assert await c.read_blob("up/a", digest) == data
        # monolithic, then a cross-repository mount of the same blob
        small = b"tiny blob"
        await c.push_blob("up/b", sha256_digest(small), small)
        assert await c.mount_blob("up/c", digest, "up/a") is True
        assert await c.blob_size("up/c", digest) == len(data)
        # a manifest pushed under a new tag, listed, then deleted
        source = await c.get_manifest("lib/small", "1")
        assert await c.put_manifest("lib/small", "v1", source) == source.digest
        assert "lib/small" in await c.catalog(page_size=1)
        assert sorted(await c.tags("lib/small", page_size=1)) == ["1", "v1"]
        assert await c.delete_manifest("lib/small", source.digest) is True
        assert await c.manifest_digest("lib/small", "v1") is None
        assert await c.delete_manifest("lib/small", source.digest) is False


async def test_wrong_digest_is_refused(regs: dict[str, Registry]) -> None:
    async with client(regs["plain"]) as c:
        with pytest.raises(RegistryError, match=r"DIGEST_INVALID"):
            await c.push_blob("up/bad", "sha256:" + hashlib.sha256(b"other").hexdigest(), b"data")


async def test_basic_auth(regs: dict[str, Registry]) -> None:
    locked = regs["locked"]
    async with client(locked, username=locked.username, password=locked.password) as c:
        manifest = await c.get_manifest("private/small", "1")
        assert manifest.digest == skopeo_digest(locked, "private/small:1")
    async with client(locked, username=locked.username, password="wrong") as c:
        with pytest.raises(RegistryAuthError, match="authentication failed"):
            await c.get_manifest("private/small", "1")
    async with client(locked) as c:
        with pytest.raises(RegistryAuthError):
            await c.ping()
    requests = [r for r in locked.access_log() if "private/small" in r[1]]
    assert sum(1 for r in requests if r[2] == 401) <= 4  # one challenge per attempt, no storm


async def test_concurrent_first_requests_all_authenticate(regs: dict[str, Registry]) -> None:
    """Requests sent together before the first challenge was answered retry with its credentials
    (parallel blob copies into a registry behind htpasswd start this way)."""
    locked = regs["locked"]
    async with client(locked, username=locked.username, password=locked.password) as c:
        missing = "sha256:" + "0" * 64
        sizes = await asyncio.gather(*(c.blob_size("private/small", missing) for _ in range(6)))
    assert sizes == [None] * 6


async def test_address_guard(regs: dict[str, Registry]) -> None:
    async with client(regs["plain"], guard=address_guard()) as c:
        with pytest.raises(AddressRefused, match="loopback"):
            await c.ping()
    async with client(regs["plain"], guard=address_guard(trusted_names=frozenset({"127.0.0.1"}))) as c:
        await c.ping()
    async with client(regs["plain"], guard=address_guard(allow_private=True)) as c:
        await c.ping()
    # a name (resolved here, not a literal) for a trusted address is not trusted itself
    async with RegistryClient(
        f"localhost:{regs['plain'].port}",
        insecure=True,
        guard=address_guard(trusted_names=frozenset({"127.0.0.1"})),
    ) as c:
        with pytest.raises(AddressRefused, match="loopback"):
            await c.ping()
    for host in ("169.254.169.254", "[::ffff:169.254.169.254]"):
        async with RegistryClient(host, insecure=True, guard=address_guard(allow_private=True)) as c:
            with pytest.raises(AddressRefused, match="link-local"):
                await c.ping()


def test_tls_by_default() -> None:
    assert RegistryClient("example.com").base_url == "https://example.com"
    assert RegistryClient("example.com", insecure=True).base_url == "http://example.com"


def test_layout_helpers_exist(tmp_path: Path) -> None:
    ref = small_image(tmp_path / "x")
    assert ref.startswith("oci:") and (tmp_path / "x" / "index.json").exists()


@pytest.fixture(scope="module")
def bearer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, TokenServer]]:
    """A registry behind a bearer-token service (the Docker Hub / Harbor scheme)."""
    root = tmp_path_factory.mktemp("oci-bearer")
    tokens = TokenServer(root, 15003, "tokenuser", "token-pass", service="primus-test-registry")
    tokens.start()
    registry = start_registry(
        root, "bearer", 15002, username="tokenuser", password="token-pass", auth_config=tokens.auth_config()
    )
    try:
        skopeo_push(small_image(root / "small"), registry, "team/app:1")
        yield registry, tokens
    finally:
        registry.stop()
        tokens.stop()


async def test_bearer_token_auth(bearer: tuple[Registry, TokenServer]) -> None:
    registry, tokens = bearer
    async with client(registry, username="tokenuser", password="token-pass") as c:
        manifest = await c.get_manifest("team/app", "1")
        assert manifest.digest == skopeo_digest(registry, "team/app:1")
        before = tokens.requests
        assert await c.manifest_digest("team/app", "1") == manifest.digest
        assert tokens.requests == before  # the token for the scope is reused
        data = b"pushed with a push-scoped token"
        await c.push_blob("team/app", sha256_digest(data), data)
        assert await c.read_blob("team/app", sha256_digest(data)) == data
    async with client(registry, username="tokenuser", password="wrong") as c:
        with pytest.raises(RegistryAuthError, match="token service refused"):
            await c.get_manifest("team/app", "1")
    async with client(registry) as c:  # anonymous: a token without access, then a clear failure
        before = tokens.requests
        with pytest.raises(RegistryAuthError, match="authentication failed"):
            await c.get_manifest("team/app", "1")
        assert tokens.requests - before == 1
