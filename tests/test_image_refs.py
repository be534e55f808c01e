"""Pure image rules: reference parsing, target naming, refused source addresses."""

from __future__ import annotations

import pytest

from domain.images import (
    BadReference,
    address_refusal,
    hostname_refusal,
    parse_reference,
    percent,
    registry_location,
    target_reference,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "host", "repository", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", ""),
        ("docker.io/pytorch/pytorch:2.0.0-cuda11.7", "docker.io", "pytorch/pytorch", "2.0.0-cuda11.7", ""),
        ("index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1", ""),
        ("127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000", "a/b/c", "v1", ""),
        ("localhost/x", "localhost", "x", "latest", ""),
        ("harbor.example.com/ai/pytorch:2.0", "harbor.example.com", "ai/pytorch", "2.0", ""),
        (f"reg.io/x@{DIGEST}", "reg.io", "x", "", DIGEST),
        ("[::1]:5000/x:1", "[::1]:5000", "x", "1", ""),
    ],
)
def test_parse_reference(text: str, host: str, repository: str, tag: str, digest: str) -> None:
    ref = parse_reference(text)
    assert (ref.host, ref.repository, ref.tag, ref.digest) == (host, repository, tag, digest)
    assert ref.reference == (digest or tag)


def test_docker_hub_api_host_and_default_host() -> None:
    assert parse_reference("busybox").api_host == "registry-1.docker.io"
    assert parse_reference("team/app:1", default_host="reg.io").host == "reg.io"


@pytest.mark.parametrize(
    "text",
    ["", "a b", "http://reg.io/x:1", "Upper/x:1", "x:bad tag", "x@sha256:short", "reg.io/", "x:" + "t" * 200],
)
def test_bad_references(text: str) -> None:
    with pytest.raises(BadReference):
        parse_reference(text)


def test_target_reference_keeps_the_repository_under_sync() -> None:
    target = target_reference("127.0.0.1:5000", parse_reference("docker.io/pytorch/pytorch:2.0"))
    assert str(target) == "127.0.0.1:5000/sync/pytorch/pytorch:2.0"
    pinned = target_reference("r:1", parse_reference(f"reg.io/x@{DIGEST}"))
    assert pinned.tag == DIGEST.replace(":", "-")[:128]


def test_registry_location() -> None:
    assert registry_location("https://Registry-1.Docker.io/") == ("registry-1.docker.io", "https")
    assert registry_location("127.0.0.1:5000/ns") == ("127.0.0.1:5000", None)
    with pytest.raises(BadReference):
        registry_location("http:///x")


@pytest.mark.parametrize(
    ("address", "allow_loopback", "refused"),
    [
        ("169.254.169.254", True, "link-local"),
        ("fe80::1", True, "link-local"),
        ("::ffff:169.254.1.1", True, "link-local"),
        ("fd00:ec2::254", True, "metadata"),
        ("127.0.0.1", False, "loopback"),
        ("::1", False, "loopback"),
        ("0.0.0.0", True, "unicast"),
        ("127.0.0.1", True, None),
        ("10.1.2.3", False, None),
        ("93.184.216.34", False, None),
    ],
)
def test_address_refusal(address: str, allow_loopback: bool, refused: str | None) -> None:
    why = address_refusal(address, allow_loopback=allow_loopback)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_metadata_host_names_and_percent() -> None:
    assert hostname_refusal("metadata.google.internal:80") is not None
    assert hostname_refusal("harbor.example.com") is None
    assert (percent(0, 10), percent(5, 10), percent(10, 10), percent(3, 0)) == (0, 50, 100, 100)
