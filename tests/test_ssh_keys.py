"""domain.ssh_keys against keys made by the real ssh-keygen, and paramiko reading what we re-encode."""

from __future__ import annotations

import io
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa

from domain.secrets import RegistryCredential, SSHCredentials, registry_host
from domain.ssh_keys import (
    SSHKeyError,
    check_key_pair,
    decode_base64,
    openssh_private_key,
    parse_private_key,
    parse_public_key,
    public_key_of,
)
from tests.fixtures.ssh_keygen import KeyPair, b64, keygen

KEY_SPECS = {
    "rsa": ("-t", "rsa", "-b", "2048"),
    "ecdsa256": ("-t", "ecdsa", "-b", "256"),
    "ecdsa384": ("-t", "ecdsa", "-b", "384"),
    "ecdsa521": ("-t", "ecdsa", "-b", "521"),
    "ed25519": ("-t", "ed25519"),
}
EXPECTED_TYPES = {
    "rsa": "ssh-rsa",
    "ecdsa256": "ecdsa-sha2-nistp256",
    "ecdsa384": "ecdsa-sha2-nistp384",
    "ecdsa521": "ecdsa-sha2-nistp521",
    "ed25519": "ssh-ed25519",
}


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def keys(keydir: Path) -> dict[str, KeyPair]:
    """One OpenSSH-format key per supported type, plus PEM and PKCS#8 variants."""
    made = {name: keygen(keydir, name, *spec) for name, spec in KEY_SPECS.items()}
    made["rsa-pem"] = keygen(keydir, "rsa-pem", *KEY_SPECS["rsa"], "-m", "PEM")
    made["ecdsa-pem"] = keygen(keydir, "ecdsa-pem", *KEY_SPECS["ecdsa384"], "-m", "PEM")
    made["rsa-pkcs8"] = keygen(keydir, "rsa-pkcs8", *KEY_SPECS["rsa"], "-m", "PKCS8")
    made["ed25519-locked"] = keygen(keydir, "ed25519-locked", "-t", "ed25519", passphrase="correct horse")
    made["rsa-pem-locked"] = keygen(
        keydir, "rsa-pem-locked", *KEY_SPECS["rsa"], "-m", "PEM", passphrase="correct horse"
    )
    return made


@pytest.mark.parametrize("name", sorted(KEY_SPECS))
def test_public_keys_parse_with_ssh_keygen_fingerprints(keys: dict[str, KeyPair], name: str) -> None:
    pair = keys[name]
    info = parse_public_key(pair.public)
    assert info.key_type == EXPECTED_TYPES[name]
    assert info.comment == f"{name}@test"
    assert info.fingerprint == pair.fingerprint()
    assert pair.public.startswith(info.openssh)


@pytest.mark.parametrize("name", [*sorted(KEY_SPECS), "rsa-pem", "ecdsa-pem", "rsa-pkcs8"])
def test_private_keys_match_their_public_keys(keys: dict[str, KeyPair], name: str) -> None:
    pair = keys[name]
    assert public_key_of(parse_private_key(pair.private)).same_key(parse_public_key(pair.public))
    assert check_key_pair(pair.private, pair.public).fingerprint == pair.fingerprint()


def test_mismatched_pairs_are_refused(keys: dict[str, KeyPair]) -> None:
    with pytest.raises(SSHKeyError, match="does not match"):
        check_key_pair(keys["rsa"].private, keys["rsa-pem"].public)
    with pytest.raises(SSHKeyError, match="does not match"):
        check_key_pair(keys["ed25519"].private, keys["ecdsa256"].public)


def test_encrypted_private_keys_are_refused(keys: dict[str, KeyPair]) -> None:
    for name in ("ed25519-locked", "rsa-pem-locked"):
        with pytest.raises(SSHKeyError, match="passphrase"):
            parse_private_key(keys[name].private)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   \n",
        b"not a key",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    ],
)
def test_garbage_private_keys_are_refused(data: bytes) -> None:
    with pytest.raises(SSHKeyError):
        parse_private_key(data)


def test_unsupported_private_key_types_are_refused() -> None:
    ed448_pem = ed448.Ed448PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(SSHKeyError, match="unsupported private key type"):
        parse_private_key(ed448_pem)
    k1_pem = ec.generate_private_key(ec.SECP256K1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(SSHKeyError, match="unsupported ECDSA curve"):
        parse_private_key(k1_pem)


def test_short_rsa_public_key_is_refused() -> None:
    modulus = (1 << 511) | 1  # a 512-bit odd number is enough to build the wire format
    short = rsa.RSAPublicNumbers(65537, modulus).public_key()
    line = short.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    with pytest.raises(SSHKeyError, match="at least 1024 bits"):
        parse_public_key(line)


def test_bad_public_keys_are_refused(keys: dict[str, KeyPair]) -> None:
    ed_body = keys["ed25519"].public.split()[1]
    rsa_body = keys["rsa"].public.split()[1]
    cases = {
        "": "empty",
        "ssh-ed25519": "must look like",
        f"ssh-dss {ed_body}": "unsupported public key type",
        f"ssh-ed25519 {ed_body[:-4]}!!!!": "not valid base64",
        f"ssh-rsa {ed_body}": "not a valid ssh-rsa key",
        f"ssh-ed25519 {rsa_body}": "not a valid ssh-ed25519 key",
        f"ssh-ed25519 {b64(b'garbage')}": "not a valid ssh-ed25519 key",
        keys["ed25519"].public + keys["rsa"].public: "single line",
        f'from="10.0.0.1" {keys["ed25519"].public}': "unsupported public key type",
    }
    for text, problem in cases.items():
        with pytest.raises(SSHKeyError, match=problem):
            parse_public_key(text)


def test_comment_and_whitespace_do_not_change_identity(keys: dict[str, KeyPair]) -> None:
    kind, body, _ = keys["ed25519"].public.split(None, 2)
    plain = parse_public_key(f"{kind} {body}")
    spaced = parse_public_key(f"  {kind}   {body}  another comment with spaces \n")
    assert plain.same_key(spaced) and plain.fingerprint == spaced.fingerprint
    assert spaced.comment == "another comment with spaces"


def test_base64_decoding_accepts_wrapped_lines_only() -> None:
    wrapped = "c3NoLXJz\nYSBBQUFB\n"
    assert decode_base64(wrapped, field="publicKey") == b"ssh-rsa AAAA"
    with pytest.raises(SSHKeyError, match="privateKey is not valid base64"):
        decode_base64("%%%not-base64", field="privateKey")


@pytest.mark.parametrize(
    ("name", "loader"),
    [
        ("rsa-pem", paramiko.RSAKey),
        ("rsa-pkcs8", paramiko.RSAKey),
        ("ecdsa-pem", paramiko.ECDSAKey),
        ("ed25519", paramiko.Ed25519Key),
    ],
)
def test_reencoded_private_keys_load_in_paramiko(
    keys: dict[str, KeyPair], name: str, loader: type[paramiko.PKey]
) -> None:
    text = openssh_private_key(keys[name].private)
    assert text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    loaded = loader.from_private_key(io.StringIO(text))
    assert f"{loaded.get_name()} {loaded.get_base64()}" == parse_public_key(keys[name].public).openssh


def test_credentials_never_show_secrets_in_repr() -> None:
    creds = SSHCredentials(username="root", password="hunter2-pass", private_key_pem="-----BEGIN X")
    assert "hunter2-pass" not in repr(creds) and "BEGIN" not in repr(creds) and "root" in repr(creds)
    reg = RegistryCredential(server="docker.io", username="u", password="registry-pass")
    assert "registry-pass" not in repr(reg)


def test_registry_host_normalisation() -> None:
    assert registry_host("https://Docker.IO/") == registry_host("docker.io") == "docker.io"
    assert registry_host("http://harbor.example.com:8443") == "harbor.example.com:8443"
