"""The paramiko driver against real sshd: both auth kinds, typed failures, TOFU host keys, SFTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from drivers.ssh import (
    AuthenticationFailed,
    CommandFailed,
    ConnectionPool,
    HostKeyChanged,
    SSHTarget,
    Unreachable,
    connect,
)
from tests.fixtures.sshd import SSHFarm, SSHHost, next_addresses, sshd_farm


@pytest.fixture(scope="module")
def farm() -> Iterator[SSHFarm]:
    with sshd_farm() as started:
        yield started


@pytest.fixture(scope="module")
def host(farm: SSHFarm) -> SSHHost:
    return farm.add_hosts(1)[0]


def target(farm: SSHFarm, host: SSHHost, **changes: object) -> SSHTarget:
    base: dict[str, object] = {"host": host.address, "port": host.port, "username": farm.user}
    base.update(changes)
    return SSHTarget(**base)  # type: ignore[arg-type]


def test_key_and_password_auth(farm: SSHFarm, host: SSHHost) -> None:
    with connect(target(farm, host, private_key_pem=farm.private_key_pem), timeout=5) as conn:
        assert conn.run(["id", "-un"], timeout=5).output.strip() == farm.user
        assert conn.host_fingerprint.startswith("ssh-ed25519 SHA256:")
    with connect(target(farm, host, password=farm.password), timeout=5) as conn:
        assert conn.run(["printf", "%s", "it's; $(no) `expansion`"], timeout=5).output == (
            "it's; $(no) `expansion`"
        )


def test_wrong_password_is_authentication_failed(farm: SSHFarm, host: SSHHost) -> None:
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed) as err:
        connect(target(farm, host, password="not-the-password"), timeout=5)
    assert time.monotonic() - started < 5
    assert farm.user in err.value.reason and "rejected" in err.value.reason


def test_closed_port_is_unreachable(farm: SSHFarm) -> None:
    address = next_addresses(1)[0]
    with socket.socket() as probe:  # nothing listens on this fresh address
        assert probe.connect_ex((address, farm.port)) != 0
    with pytest.raises(Unreachable) as err:
        connect(SSHTarget(host=address, port=farm.port, username="x", password="y"), timeout=2)
    assert "refused" in err.value.reason.lower()


def test_changed_host_key_is_refused_before_login(farm: SSHFarm) -> None:
    host = farm.add_hosts(1)[0]
    with connect(target(farm, host, password=farm.password), timeout=5) as conn:
        first = conn.host_fingerprint
    # the same key is accepted again
    connect(target(farm, host, password=farm.password, known_fingerprint=first), timeout=5).close()
    farm.rekey(host)
    with pytest.raises(HostKeyChanged) as err:
        connect(target(farm, host, password=farm.password, known_fingerprint=first), timeout=5)
    assert err.value.expected == first and err.value.actual != first
    assert "hostKeyFingerprint" in err.value.reason


def test_command_failure_streaming_and_sftp(farm: SSHFarm, host: SSHHost) -> None:
    lines: list[str] = []
    with connect(target(farm, host, password=farm.password), timeout=5) as conn:
        result = conn.run(
            ["sh", "-c", "echo one; sleep 0.1; echo two >&2; sleep 0.1; printf three"],
            timeout=5,
            on_line=lines.append,
        )
        assert result.exit_code == 0 and lines == ["one", "two", "three"]
        with pytest.raises(CommandFailed) as err:
            conn.run(["sh", "-c", "echo broken; exit 7"], timeout=5)
        assert err.value.exit_code == 7 and "broken" in err.value.reason
        with pytest.raises(CommandFailed) as slow:
            conn.run(["sleep", "5"], timeout=1)
        assert "timed out" in slow.value.output
        conn.put(b"#!/bin/sh\necho copied\n", "copied.sh", mode=0o700)
        assert conn.run(["./copied.sh"], timeout=5).output == "copied\n"
        assert conn.run(["stat", "-c", "%a", "copied.sh"], timeout=5).output.strip() == "700"


def test_stdin_is_sent_then_end_of_file(farm: SSHFarm, host: SSHHost) -> None:
    """What the addon step relies on: one command writes the script it reads, then runs it."""
    script = b"#!/bin/sh\necho from stdin\n" + b"# padding\n" * 20000  # beyond one SSH window packet
    with connect(target(farm, host, password=farm.password), timeout=5) as conn:
        assert conn.run(["wc", "-c"], timeout=5, stdin=script).output.strip() == str(len(script))
        argv = [
            "sh",
            "-c",
            'mkdir -p "$1" && cat > "$2" && chmod 700 "$2" && exec "./$2"',
            "sh",
            "d",
            "d/s.sh",
        ]
        assert conn.run(argv, timeout=5, stdin=script).output == "from stdin\n"
        with pytest.raises(ValueError, match="pseudo-terminal"):
            conn.run(["cat"], timeout=5, stdin=b"x", hangup=True)


def test_pool_lends_a_login_only_for_the_same_target(farm: SSHFarm, host: SSHHost) -> None:
    pool = ConnectionPool(idle_seconds=0.5)
    by_password = target(farm, host, password=farm.password)
    conn = connect(by_password, timeout=5)
    pool.give(by_password, conn)
    assert pool.take(target(farm, host, password="other")) is None  # other credentials
    assert (
        pool.take(target(farm, host, password=farm.password, known_fingerprint="ssh-ed25519 SHA256:x"))
        is None
    )
    # the mismatching take above closed the pooled connection rather than lend it
    assert not conn.is_active()
    again = connect(by_password, timeout=5)
    pool.give(by_password, again)
    assert pool.take(by_password) is again and again.is_active()
    pool.give(by_password, again)
    time.sleep(0.6)
    assert pool.take(by_password) is None and not again.is_active()  # expired and closed
    pool.close_all()
