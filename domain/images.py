"""Images: references, media types, statuses, import states and source-address rules (pure logic)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

# Manifest media types (Docker v2 and OCI).
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SINGLE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_MANIFESTS = (DOCKER_MANIFEST_LIST, OCI_INDEX)
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DEFAULT_TAG = "latest"
TARGET_NAMESPACE = "sync"
"""Imported images land under `<internal registry>/sync/<source host>/<source repository>`
(upstream: `sync/<source repository>`, which let one registry's `x:1` stand for every other's)."""
MAX_REPOSITORY = 255

# Import answers of POST /images:import.
IMPORT_FAILED = 0
IMPORT_STARTED = 1
IMPORT_EXISTS = 2

ImageStatus = Literal["Importing", "Ready", "Failed"]
STATUS_IMPORTING: ImageStatus = "Importing"
STATUS_READY: ImageStatus = "Ready"
STATUS_FAILED: ImageStatus = "Failed"

LayerStatus = Literal["pending", "downloading", "completed", "skipped", "mounted", "failed"]
LAYER_DONE: tuple[str, ...] = ("completed", "skipped", "mounted")

INCLUDE_TYPE_IMPORT = "import"

# Activities called by name from workflows that import no activity module (see workflows/).
ACTIVITY_CANCEL_IMPORT = "images.cancel_import"
ACTIVITY_DELETE_MANIFEST = "images.delete_manifest"
ACTIVITY_REMOVE_IMAGE = "images.remove"
ACTIVITY_REGISTRY_STATS = "images.registry_stats"

RegistryHealth = Literal["healthy", "unhealthy"]

_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$")

METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_METADATA_IPS = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_EXTRA_METADATA = (ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200"))
_SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")
"""Carrier-grade NAT space: private in practice, though `ipaddress` does not call it so."""
_NUMERIC_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BadReference(ValueError):
    """An image reference that cannot be parsed; the message says why."""


@dataclass(frozen=True)
class ImageReference:
    """`host/repository:tag` or `host/repository@digest`; `host` is as written (may carry a port)."""

    host: str
    repository: str
    tag: str = DEFAULT_TAG
    digest: str = ""

    @property
    def reference(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag

    @property
    def api_host(self) -> str:
        """The host serving the registry API (Docker Hub's API lives elsewhere)."""
        return DOCKER_HUB_API_HOST if self.host == DOCKER_HUB else self.host

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


def split_reference(text: str) -> tuple[str | None, str, str, str]:
    """(host or None, repository, tag, digest) of `text`, without applying defaults for the host."""
    raw = text.strip()
    if not raw or any(c.isspace() for c in raw):
        raise BadReference("image reference must be non-empty and contain no spaces")
    if "://" in raw:
        raise BadReference("image reference must not carry a scheme (write host/repository:tag)")
    digest = ""
    if "@" in raw:
        raw, digest = raw.split("@", 1)
        if not _DIGEST.match(digest):
            raise BadReference(f"digest {digest!r} is not sha256:<64 hex>")
    host: str | None = None
    first, sep, rest = raw.partition("/")
    if sep and _looks_like_host(first):
        host, raw = first, rest
        name = host_name(host)
        if not _HOST.match(host) or len(name) > 253 or any(len(label) > 63 for label in name.split(".")):
            raise BadReference(f"registry host {host!r} is invalid")
    tag = ""
    slash = raw.rfind("/")
    colon = raw.rfind(":")
    if colon > slash:
        raw, tag = raw[:colon], raw[colon + 1 :]
        if not _TAG.match(tag):
            raise BadReference(f"tag {tag!r} is invalid")
    if not raw:
        raise BadReference("repository is empty")
    for part in raw.split("/"):
        if not _REPO_COMPONENT.match(part):
            raise BadReference(f"repository {raw!r} is invalid (lower-case letters, digits, '.', '_', '-')")
    if len(raw) > 255:
        raise BadReference("repository is longer than 255 characters")
    return host, raw, tag or ("" if digest else DEFAULT_TAG), digest


def parse_reference(text: str, default_host: str | None = None) -> ImageReference:
    """Parse `text`; a reference without a host gets `default_host` (Docker Hub when None)."""
    host, repository, tag, digest = split_reference(text)
    host = (host or default_host or DOCKER_HUB).lower()
    if host in (DOCKER_HUB, "index.docker.io", DOCKER_HUB_API_HOST):
        host = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    return ImageReference(host=host, repository=repository, tag=tag, digest=digest)


def has_host(text: str) -> bool:
    """Whether the reference names its registry host explicitly."""
    return split_reference(text)[0] is not None


def registry_location(url: str) -> tuple[str, str | None]:
    """(host[:port], scheme or None) of a registry URL written with or without a scheme."""
    value = url.strip()
    scheme: str | None = None
    for candidate in ("https", "http"):
        if value.lower().startswith(candidate + "://"):
            scheme, value = candidate, value[len(candidate) + 3 :]
            break
    host = value.split("/", 1)[0].lower()
    if not host or not _HOST.match(host):
        raise BadReference(f"registry URL {url!r} has no valid host")
    return host, scheme


def host_component(host: str) -> str:
    """`host[:port]` as one repository path component: lower case, `:port` as `_port`, an IPv6
    literal as its eight groups joined by `_` (host names hold no `_`, so no two hosts meet)."""
    host = host.lower()
    if host.startswith("["):
        end = host.index("]")
        try:
            name = ipaddress.IPv6Address(host[1:end]).exploded.replace(":", "_")
        except ValueError:
            raise BadReference(f"host {host} is not a valid IPv6 address") from None
        port = host[end + 2 :]
    else:
        name, _, port = host.partition(":")
    return f"{name}_{port}" if port else name


def target_reference(registry_host: str, source: ImageReference) -> ImageReference:
    """Where an import of `source` lands in the internal registry: under its source host, so the
    same repository and tag from two registries are two images."""
    repository = f"{TARGET_NAMESPACE}/{host_component(source.host)}/{source.repository}"
    if len(repository) > MAX_REPOSITORY:
        raise BadReference(f"target repository {repository} is longer than {MAX_REPOSITORY} characters")
    return ImageReference(
        host=registry_host,
        repository=repository,
        tag=source.tag or source.digest.replace(":", "-")[:128],
    )


def host_name(host: str) -> str:
    """The host part of `host[:port]` (brackets of IPv6 literals removed)."""
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _ipv4_number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


def literal_address(host: str) -> IPAddress | None:
    """The IP address `host[:port]` spells, or None for a name. IPv4 is read as `inet_aton` (and
    so the resolver and HTTP clients) reads it: `127.1`, `0x7f000001`, `2130706433`, octal
    `0251.0376.0251.0376`. A numeric host that is no address raises BadReference."""
    name = host_name(host).rstrip(".")
    if ":" in name or host.startswith("["):
        try:
            return ipaddress.IPv6Address(name)
        except ValueError:
            raise BadReference(f"host {host} is not a valid IPv6 address") from None
    parts = name.split(".")
    if not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    try:
        numbers = [_ipv4_number(p) for p in parts]
    except ValueError:
        raise BadReference(f"host {host} is not a valid IPv4 address") from None
    count = len(numbers)  # the last part fills the bytes the others leave
    if count > 4 or any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 2 ** (8 * (5 - count)):
        raise BadReference(f"host {host} is not a valid IPv4 address")
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def address_refusal(address: str | IPAddress, *, allow_private: bool) -> str | None:
    """Why an import may not reach `address` (an IP), or None when it may. Link-local, metadata,
    unspecified and multicast addresses are always refused; loopback and private ones unless
    `allow_private` (a registry an administrator registered, or the internal one)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in _METADATA_IPS) or ip in _EXTRA_METADATA:
        return f"address {address} is link-local or a cloud metadata address"
    if ip.is_unspecified or ip.is_multicast:
        return f"address {address} is not a unicast address"
    if allow_private:
        return None
    if ip.is_loopback:
        return f"address {address} is a loopback address (register the registry as an image registry)"
    if ip.is_private or ip in _SHARED_SPACE:
        return f"address {address} is a private address (register the registry as an image registry)"
    return None


def hostname_refusal(host: str, *, allow_private: bool) -> str | None:
    """Why `host[:port]` is refused before any resolution, or None: metadata names, `localhost`
    names and every literal address `address_refusal` refuses (BadReference when the host is
    numeric but no address)."""
    name = host_name(host).lower().rstrip(".")
    if name in METADATA_HOSTS:
        return f"host {name} is a cloud metadata address"
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        return f"host {name} is a loopback address (register the registry as an image registry)"
    address = literal_address(host)
    return None if address is None else address_refusal(address, allow_private=allow_private)


def server_refusal(server: str) -> str | None:
    """Why a registry server an administrator writes down (`[scheme://]host[:port][/path]`, an
    image registry's URL or an image secret's server) may never be reached, or None: metadata
    names and link-local or metadata literals in any spelling. Decided without DNS; loopback and
    private addresses are allowed (an administrator's registry may be there)."""
    host = server.strip()
    for scheme in ("https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme) :]
    host = host.split("/", 1)[0]
    try:
        return hostname_refusal(host, allow_private=True) if host else None
    except BadReference as exc:
        return str(exc)


def import_workflow_id(image_id: int) -> str:
    """One import per image: a repeated request cannot start a twin."""
    return f"image-import/{image_id}"


def delete_workflow_id(image_id: int) -> str:
    """One deletion per image: a repeated DELETE cannot start a twin."""
    return f"image-delete/{image_id}"


def percent(done: int, total: int) -> int:
    """Whole-number progress in 0..100."""
    if total <= 0:
        return 100 if done > 0 else 0
    return max(0, min(100, done * 100 // total))


def platform_key(os_name: str, arch: str, variant: str = "") -> str:
    """`linux/amd64` or `linux/arm64/v8`."""
    return "/".join(p for p in (os_name, arch, variant) if p)


# ---- workflow and activity payloads (no credentials: activities load them) -----------------


class BlobPlan(BaseModel):
    """A blob (layer or config) to copy."""

    digest: str
    size: int
    media_type: str = ""


class ManifestPlan(BaseModel):
    """A manifest (or the index) to push, byte for byte: base64 of its body."""

    digest: str
    media_type: str
    body_b64: str
    platform: str = ""
    """`os/arch` of a platform manifest; "" for the top-level manifest or index."""


class ImportPlan(BaseModel):
    """What an import copies: distinct blobs, then manifests (platform manifests first, the tag last)."""

    blobs: list[BlobPlan]
    manifests: list[ManifestPlan]
    present: list[str] = []
    """Digests the target already holds (recorded as skipped), when resolving was asked to look."""
    pushed: str = ""
    """The digest under the target tag when resolving found every blob there and pushed the
    manifests itself (the image is then Ready: nothing is left to do)."""


class ImportSpec(BaseModel):
    """The import workflow's input."""

    image_id: int
    source: str
    target: str
    source_registry_id: int | None = None
    user_id: str = ""
    activity_queue: str
    parallel_layers: int = 4
    step_timeout_seconds: int = 120
    blob_timeout_seconds: int = 3600
    heartbeat_timeout_seconds: int = 30
    restart: bool = False
    """The image failed before: the run waits for the `restart` update to reset it first."""


class ResolveInput(BaseModel):
    """Resolve the source of image `image_id` into a plan."""

    image_id: int
    source: str
    source_registry_id: int | None = None
    target: str = ""
    """When set, blobs this target repository already holds are recorded as skipped (and listed
    in the plan's `present`), so only the others are copied."""
    push_when_complete: bool = False
    """With `target`: when the target holds every blob, push the manifests and record the image
    Ready in the same step."""


class BlobCopy(BaseModel):
    """Copy one blob from the source repository to the target repository."""

    image_id: int
    source: str
    target: str
    source_registry_id: int | None = None
    blob: BlobPlan


BlobOutcome = Literal["completed", "skipped", "mounted"]


class BlobResult(BaseModel):
    """How a blob reached the target and how many bytes were sent for it by this attempt."""

    digest: str
    outcome: BlobOutcome
    bytes_sent: int = 0


class PushManifests(BaseModel):
    """Push the plan's manifests to `target`."""

    image_id: int
    target: str
    manifests: list[ManifestPlan]
    finish: bool = False
    """Record the image Ready once the tag is verified (the same step: Ready as soon as pushed)."""


class FinishImport(BaseModel):
    """Record the end of an import."""

    image_id: int
    status: ImageStatus
    message: str = ""


class SourceCheck(BaseModel):
    """Is the source manifest there and readable? (`images.check_source`, before an import)."""

    source: str
    """The parsed source reference, host included."""
    registry_id: int | None = None


class SourceVerdict(BaseModel):
    """ "" when the source can be imported, else why not; `refused` when its address is not
    allowed (a 400, not an import failure)."""

    problem: str = ""
    refused: bool = False
    digest: str = ""
    """The digest the source reference points at now (when it can be imported)."""


class RestartImport(BaseModel):
    """Reset a failed image to Importing for a new import by `user_id` (the `restart` update)."""

    image_id: int
    source: str
    target: str
    source_registry_id: int | None = None
    user_id: str
    user_name: str


class ExternalProgress(BaseModel):
    """Per-blob (status, percent) an external copier reports (the `report_progress` update)."""

    image_id: int
    layers: dict[str, tuple[str, int]]


class ImportResult(BaseModel):
    """The workflow's result."""

    image_id: int
    status: ImageStatus
    digest: str = ""
    message: str = ""


class DeleteImageInput(BaseModel):
    """The deletion workflow's input: which image, where its registry activities run."""

    image_id: int
    activity_queue: str
    step_timeout_seconds: int = 120


ManifestOutcome = Literal["deleted", "absent", "shared", "skipped", "gone"]
"""`deleted`; `absent` (the registry had no such manifest); `shared` (another image points at it);
`skipped` (no digest, or not in the internal registry); `gone` (the record was already removed)."""


class DeleteImageResult(BaseModel):
    """What the deletion did."""

    image_id: int
    import_cancelled: bool
    manifest: ManifestOutcome
    removed: bool


class RegistryStatsInput(BaseModel):
    """The scheduled registry check: where its activity runs and how long it may take."""

    activity_queue: str
    timeout_seconds: int = 120


class RegistryCheck(BaseModel):
    """One check of the internal registry: health, and its catalogue size when it answered."""

    registry: str
    """`host:port`; "" when no internal registry is configured (nothing is recorded then)."""
    status: RegistryHealth = "unhealthy"
    repositories: int | None = None
    message: str = ""
