"""Pure image rules: reference parsing, target naming, refused source addresses."""

from __future__ import annotations

import pytest

from domain.images import (
    BadReference,
    address_refusal,
    hostname_refusal,
    literal_address,
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


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("docker.io/pytorch/pytorch:2.0", "r:1/sync/docker.io/pytorch/pytorch:2.0"),
        ("busybox", "r:1/sync/docker.io/library/busybox:latest"),
        ("127.0.0.1:5000/a/b:1", "r:1/sync/127.0.0.1_5000/a/b:1"),
        ("Harbor.Example.com/ai/x:2", "r:1/sync/harbor.example.com/ai/x:2"),
        ("[::1]:5000/x:1", "r:1/sync/0000_0000_0000_0000_0000_0000_0000_0001_5000/x:1"),
        ("[fd00::1]/x:1", "r:1/sync/fd00_0000_0000_0000_0000_0000_0000_0001/x:1"),
    ],
)
def test_target_reference_names_the_source_host(source: str, target: str) -> None:
    """Two registries' `x:1` never share a target; the host component is a valid repository part."""
    assert str(target_reference("r:1", parse_reference(source))) == target


def test_target_reference_of_a_pinned_digest_and_length() -> None:
    pinned = target_reference("r:1", parse_reference(f"reg.io/x@{DIGEST}"))
    assert pinned.tag == DIGEST.replace(":", "-")[:128] and pinned.repository == "sync/reg.io/x"
    with pytest.raises(BadReference, match="longer than 255"):
        target_reference("r:1", parse_reference("reg.io/" + "/".join(["a" * 50] * 5) + ":1"))


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1:80", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f000001:5000", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0251.0376.0251.0376:80", "169.254.169.254"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("10.1", "10.0.0.1"),
        ("[::ffff:127.0.0.1]:5000", "::ffff:7f00:1"),
        ("[::1]", "::1"),
        ("harbor.example.com:443", None),
        ("localhost", None),
        ("1.example", None),
    ],
)
def test_literal_address(host: str, address: str | None) -> None:
    found = literal_address(host)
    assert (found is None) if address is None else (str(found) == address)


@pytest.mark.parametrize("host", ["999.1.1.1", "1.2.3.4.5", "0x1ffffffff", "08.1.1.1", "[::g]"])
def test_numeric_hosts_that_are_no_address(host: str) -> None:
    with pytest.raises(BadReference, match="not a valid"):
        literal_address(host)


def test_registry_location() -> None:
    assert registry_location("https://Registry-1.Docker.io/") == ("registry-1.docker.io", "https")
    assert registry_location("127.0.0.1:5000/ns") == ("127.0.0.1:5000", None)
    with pytest.raises(BadReference):
        registry_location("http:///x")


@pytest.mark.parametrize(
    ("address", "allow_private", "refused"),
    [
        ("169.254.169.254", True, "link-local"),
        ("fe80::1", True, "link-local"),
        ("::ffff:169.254.1.1", True, "link-local"),
        ("fd00:ec2::254", True, "metadata"),
        ("100.100.100.200", True, "metadata"),
        ("127.0.0.1", False, "loopback"),
        ("::1", False, "loopback"),
        ("::ffff:127.0.0.1", False, "loopback"),
        ("0.0.0.0", True, "unicast"),
        ("127.0.0.1", True, None),
        ("10.1.2.3", False, "private"),
        ("192.168.0.1", False, "private"),
        ("fd00::1", False, "private"),
        ("100.64.0.1", False, "private"),
        ("10.1.2.3", True, None),
        ("93.184.216.34", False, None),
        ("2606:4700::1111", False, None),
    ],
)
def test_address_refusal(address: str, allow_private: bool, refused: str | None) -> None:
    why = address_refusal(address, allow_private=allow_private)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_host_refusal_without_dns() -> None:
    """Names and literals decided without resolving anything."""
    assert "metadata" in str(hostname_refusal("metadata.google.internal:80", allow_private=True))
    assert "link-local" in str(hostname_refusal("0251.0376.0251.0376:80", allow_private=True))
    assert "loopback" in str(hostname_refusal("localhost:5000", allow_private=False))
    assert "loopback" in str(hostname_refusal("registry.localhost", allow_private=False))
    assert "loopback" in str(hostname_refusal("127.1:5000", allow_private=False))
    assert hostname_refusal("localhost:5000", allow_private=True) is None
    assert hostname_refusal("harbor.example.com", allow_private=False) is None


def test_percent() -> None:
    assert (percent(0, 10), percent(5, 10), percent(10, 10), percent(3, 0)) == (0, 50, 100, 100)
