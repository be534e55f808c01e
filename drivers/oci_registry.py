"""An OCI Distribution (Docker Registry v2) client on aiohttp.

Covers ping, manifests (Docker v2 and OCI, images and indexes), blob HEAD/GET, cross-repository
mount, monolithic and chunked uploads (resumable), deletes, catalogue and tags with paging.
Authentication answers the registry's `WWW-Authenticate` challenge: Basic, or Bearer tokens from
the realm it names. TLS is verified (the system's trust store) unless the registry is configured
as insecure, in which case plain HTTP is used. An optional address guard refuses requests
(redirects and token realms included) to hosts that resolve to forbidden addresses.

aiohttp rather than httpx: a blob copy streams every byte through this client, and aiohttp's
C parser and writer cost about a third of httpx's CPU per MB (measured side by side copying
200 MB between two docker-registry instances: 1.5 ms/MB against 3.9 ms/MB, hashing included).
Blob bodies are streamed as they arrive and as they are produced, never held whole.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from domain.images import MANIFEST_ACCEPT, BadReference, address_refusal, host_name, hostname_refusal

AddressGuard = Callable[[str], Awaitable[None]]
Body = bytes | AsyncIterator[bytes | memoryview] | None

MAX_REDIRECTS = 10
REDIRECTS = (301, 302, 303, 307, 308)


class RegistryError(Exception):
    """A registry answered with an error; `status` is the HTTP status, `code` the OCI error code."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class RegistryAuthError(RegistryError):
    """The registry refused the credentials (401/403 after answering its challenge)."""


class RegistryNotFound(RegistryError):
    """The repository, manifest, blob or upload does not exist."""


class AddressRefused(RegistryError):
    """The registry (or a redirect or token realm) points at a forbidden address, or at one that
    cannot be used at all."""


class RegistryUnreachable(RegistryError):
    """The registry could not be reached, or broke off mid-request (refused, reset, timed out):
    `status` 0, a transient failure."""


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as stored: its bytes, media type and digest."""

    media_type: str
    digest: str
    body: bytes


@dataclass
class _AuthState:
    basic: str | None = None
    tokens: dict[str, str] = field(default_factory=dict)


def sha256_digest(data: bytes) -> str:
    """`sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """(scheme lower-cased, parameters) of a `WWW-Authenticate` header."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


def address_guard(
    *, trusted_names: frozenset[str] = frozenset(), allow_private: bool = False
) -> AddressGuard:
    """A guard resolving each host and refusing link-local and metadata addresses everywhere, and
    loopback and private ones unless `allow_private` or the host's name is in `trusted_names`
    (the registry an administrator registered, or the internal one: redirects and token realms
    elsewhere are checked in full)."""
    checked: set[str] = set()

    async def guard(host: str) -> None:
        if host in checked:
            return
        name = host_name(host)
        allow = allow_private or name.lower().rstrip(".") in trusted_names
        try:
            why = hostname_refusal(host, allow_private=allow)
        except BadReference as exc:
            raise AddressRefused(str(exc)) from exc
        if why:
            raise AddressRefused(why)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise RegistryError(f"cannot resolve registry host {name}: {exc}") from exc
        for info in infos:
            why = address_refusal(str(info[4][0]), allow_private=allow)
            if why:
                raise AddressRefused(f"registry host {name} refused: {why}")
        checked.add(host)

    return guard


@dataclass
class _Reply:
    """A registry's answer read whole (every request but a blob download)."""

    status: int
    headers: CIMultiDictProxy[str]
    url: URL
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RegistryClient:
    """One registry. Use as an async context manager (or call `aclose`)."""

    def __init__(
        self,
        host: str,
        *,
        username: str = "",
        password: str = "",
        insecure: bool = False,
        scheme: str | None = None,
        timeout: float = 60.0,
        guard: AddressGuard | None = None,
    ) -> None:
        self.host = host
        scheme = scheme or ("http" if insecure else "https")
        self.base_url = f"{scheme}://{host}"
        self._username = username
        self._password = password
        self._auth = _AuthState()
        self._guard = guard
        self._insecure = insecure
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout, 15.0), sock_read=timeout)
        self._proxies: dict[str, str | None] = {}
        self._session: aiohttp.ClientSession | None = None
        """Created at the first request (aiohttp sessions belong to a running event loop)."""

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=32, ssl=not self._insecure)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                read_bufsize=256 * 1024,
            )
        return self._session

    # ---- transport --------------------------------------------------------------------------

    def _proxy(self, url: URL) -> str | None:
        """The proxy the environment names for `url` (HTTP(S)_PROXY, NO_PROXY), as httpx used
        them; looked up here once per origin (aiohttp's `trust_env` would read the environment
        and ~/.netrc in a thread for every request)."""
        key = f"{url.scheme}://{url.raw_authority}"
        if key not in self._proxies:
            proxy = urllib.request.getproxies().get(url.scheme)
            bypass = url.raw_host is None or urllib.request.proxy_bypass(url.raw_host)
            self._proxies[key] = None if bypass else proxy
        return self._proxies[key]

    def _unreachable(self, method: str, url: URL, exc: BaseException) -> RegistryError:
        if isinstance(exc, aiohttp.InvalidURL):
            return AddressRefused(f"host {url.host or self.host} cannot be used: {exc}")
        return RegistryUnreachable(f"{self.host}: {method} {url.path} failed: {exc!r}")

    async def _open(
        self, method: str, url: URL, headers: dict[str, str], content: Body, *, raw: bool = False
    ) -> aiohttp.ClientResponse:
        """Send one request, following redirects (each hop guarded; credentials stay with their
        origin); the response is open, its body unread. `raw`: no content decoding (blob bytes)."""
        for _ in range(MAX_REDIRECTS + 1):
            if self._guard is not None:
                await self._guard(url.raw_authority)
            try:
                response = await self._http().request(
                    method,
                    url,
                    headers=headers,
                    data=content,
                    allow_redirects=False,
                    auto_decompress=not raw,
                    proxy=self._proxy(url),
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise self._unreachable(method, url, exc) from exc
            location = response.headers.get("Location")
            if response.status not in REDIRECTS or not location:
                return response
            response.release()
            if not isinstance(content, bytes | None):
                raise RegistryError(f"{self.host}: {method} {url.path} redirected a streamed body")
            target = url.join(URL(location, encoded=True))
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, content = "GET", None
            if target.origin() != url.origin():
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = target
        raise RegistryError(f"{self.host}: more than {MAX_REDIRECTS} redirects")

    async def _read(self, method: str, url: URL, response: aiohttp.ClientResponse) -> _Reply:
        try:
            body = b"" if method == "HEAD" else await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._unreachable(method, url, exc) from exc
        finally:
            response.release()
        return _Reply(response.status, response.headers, response.url, body)

    # ---- auth -------------------------------------------------------------------------------

    def _auth_header(self, scope: str) -> dict[str, str]:
        token = self._auth.tokens.get(scope)
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._auth.basic:
            return {"Authorization": self._auth.basic}
        return {}

    def _basic(self) -> str:
        raw = f"{self._username}:{self._password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def _answer_challenge(self, challenge: str, scope: str) -> bool:
        """Set up credentials for `scope` from a 401's challenge; False when there is nothing new
        to try."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self._username or self._auth.basic:
                return False
            self._auth.basic = self._basic()
            return True
        if scheme != "bearer" or "realm" not in params or scope in self._auth.tokens:
            return False
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        for item in (params.get("scope") or scope).split(" "):
            if item:
                query.append(("scope", item))
        realm = URL(params["realm"]).extend_query(query)
        headers = {"Authorization": self._basic()} if self._username else {}
        resp = await self._read("GET", realm, await self._open("GET", realm, headers, None))
        if resp.status in (401, 403):
            raise RegistryAuthError(
                f"{self.host}: the token service refused the credentials", status=resp.status
            )
        if resp.status != 200:
            raise RegistryError(f"{self.host}: token service answered {resp.status}", status=resp.status)
        try:
            body = resp.json()
        except ValueError as exc:
            raise RegistryAuthError(f"{self.host}: the token service answered no JSON") from exc
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryAuthError(f"{self.host}: the token service returned no token")
        self._auth.tokens[scope] = str(token)
        return True

    async def _start(
        self,
        method: str,
        url: str | URL,
        scope: str,
        *,
        ok: tuple[int, ...],
        headers: dict[str, str] | None,
        content: Body,
        raw: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send with credentials, answering one challenge; the open response of an `ok` status,
        else a typed error. A streamed body is sent once: it is not there to send again."""
        target = url if isinstance(url, URL) else URL(url, encoded=True)
        replayable = isinstance(content, bytes | None)
        for attempt in range(3):
            sent_auth = self._auth_header(scope)
            response = await self._open(method, target, {**(headers or {}), **sent_auth}, content, raw=raw)
            if response.status != 401:
                break
            challenge = response.headers.get("WWW-Authenticate", "")
            response.release()
            if replayable and attempt < 2 and sent_auth != self._auth_header(scope):
                continue  # a concurrent request answered the challenge meanwhile: use its credentials
            if not replayable or attempt == 2 or not await self._answer_challenge(challenge, scope):
                raise RegistryAuthError(
                    f"{self.host}: authentication failed (check the registry's username and password)",
                    status=401,
                    code="UNAUTHORIZED",
                )
        if response.status in ok:
            return response
        raise self._error(method, await self._read(method, target, response))

    async def _send(
        self,
        method: str,
        url: str | URL,
        scope: str,
        *,
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        content: Body = None,
    ) -> _Reply:
        """`_start`, with the answer read whole."""
        response = await self._start(method, url, scope, ok=ok, headers=headers, content=content)
        return await self._read(method, response.url, response)

    def _error(self, method: str, response: _Reply) -> RegistryError:
        code, detail = "", ""
        try:
            errors = response.json().get("errors") or []
            if errors:
                code = str(errors[0].get("code", ""))
                detail = str(errors[0].get("message", ""))
        except (ValueError, AttributeError):
            detail = response.body[:200].decode(errors="replace")
        status = response.status
        message = f"{self.host}: {method} {response.url.path} -> {status} {code} {detail}".strip()
        if status == 404:
            return RegistryNotFound(message, status=status, code=code)
        if status in (401, 403):
            return RegistryAuthError(message, status=status, code=code)
        return RegistryError(message, status=status, code=code)

    def _url(self, path: str) -> str:
        return f"{self.base_url}/v2/{path}"

    @staticmethod
    def pull_scope(repository: str) -> str:
        """The token scope for reading `repository`."""
        return f"repository:{repository}:pull"

    @staticmethod
    def push_scope(repository: str) -> str:
        """The token scope for writing `repository`."""
        return f"repository:{repository}:pull,push"

    # ---- base -------------------------------------------------------------------------------

    async def ping(self) -> None:
        """`GET /v2/`, authenticating if asked; raises when unreachable or refused."""
        await self._send("GET", f"{self.base_url}/v2/", "registry:catalog:*")

    # ---- manifests --------------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest or index for a tag or digest, with its digest verified when pinned."""
        response = await self._send(
            "GET",
            self._url(f"{repository}/manifests/{reference}"),
            self.pull_scope(repository),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        body = response.body
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"{self.host}: manifest {reference} has digest {digest}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type or media_type == "application/json":
            media_type = str(response.json().get("mediaType", ""))
        return Manifest(media_type=media_type, digest=digest, body=body)

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag points at (HEAD), or None when it does not exist."""
        try:
            response = await self._send(
                "HEAD",
                self._url(f"{repository}/manifests/{reference}"),
                self.pull_scope(repository),
                headers={"Accept": MANIFEST_ACCEPT},
            )
        except RegistryNotFound:
            return None
        return response.headers.get("Docker-Content-Digest") or None

    async def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Store a manifest under a tag or its digest; returns (and checks) the registry's digest."""
        response = await self._send(
            "PUT",
            self._url(f"{repository}/manifests/{reference}"),
            self.push_scope(repository),
            ok=(201, 200),
            headers={"Content-Type": manifest.media_type},
            content=manifest.body,
        )
        digest = str(response.headers.get("Docker-Content-Digest", manifest.digest))
        if digest != manifest.digest:
            raise RegistryError(
                f"{self.host}: stored manifest has digest {digest}, expected {manifest.digest}"
            )
        return digest

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete a manifest by digest (every tag on it goes too); False when it was not there."""
        try:
            await self._send(
                "DELETE",
                self._url(f"{repository}/manifests/{digest}"),
                self.push_scope(repository).replace("pull,push", "*"),
                ok=(202, 200),
            )
        except RegistryNotFound:
            return False
        return True

    # ---- blobs ------------------------------------------------------------------------------

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """The size of a blob in `repository` (HEAD), or None when it is missing."""
        try:
            response = await self._send(
                "HEAD", self._url(f"{repository}/blobs/{digest}"), self.pull_scope(repository)
            )
        except RegistryNotFound:
            return None
        return int(response.headers.get("Content-Length", "0"))

    @asynccontextmanager
    async def open_blob(self, repository: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob's bytes as they arrive, undecoded (redirects to storage are followed)."""
        url = URL(self._url(f"{repository}/blobs/{digest}"), encoded=True)
        response = await self._start(
            "GET",
            url,
            self.pull_scope(repository),
            ok=(200,),
            headers={"Accept-Encoding": "identity"},
            content=None,
            raw=True,
        )
        try:
            yield self._pieces(url, response)
        finally:
            response.release()

    async def _pieces(self, url: URL, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async for data in response.content.iter_any():
                yield data
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._unreachable("GET", url, exc) from exc

    async def read_blob(self, repository: str, digest: str) -> bytes:
        """A whole blob, digest verified (for configs and small blobs)."""
        async with self.open_blob(repository, digest) as pieces:
            data = b"".join([piece async for piece in pieces])
        if sha256_digest(data) != digest:
            raise RegistryError(f"{self.host}: blob {digest} failed digest verification")
        return data

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount; True when mounted, False when the registry started an upload."""
        scope = f"{self.push_scope(repository)} {self.pull_scope(from_repository)}"
        url = URL(self._url(f"{repository}/blobs/uploads/"), encoded=True).update_query(
            {"mount": digest, "from": from_repository}
        )
        response = await self._send("POST", url, scope, ok=(201, 202))
        if response.status == 202:
            await self.cancel_upload(repository, self._location(response))
            return False
        return True

    def _location(self, response: _Reply) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.host}: upload response carries no Location")
        return str(response.url.join(URL(location, encoded=True)))

    async def start_upload(self, repository: str) -> str:
        """Open an upload session; returns its absolute location (with the registry's `_state`)."""
        response = await self._send(
            "POST", self._url(f"{repository}/blobs/uploads/"), self.push_scope(repository), ok=(202,)
        )
        return self._location(response)

    async def upload_offset(self, repository: str, location: str) -> int | None:
        """Bytes the session at `location` holds, or None when it is gone or unusable."""
        try:
            response = await self._send("GET", location, self.push_scope(repository), ok=(204, 200))
        except (RegistryAuthError, RegistryUnreachable):
            raise
        except RegistryError:
            return None
        end = response.headers.get("Range", "0-0").rpartition("-")[2]
        return int(end) + 1 if end.isdigit() and int(end) > 0 else 0

    async def upload_chunk(
        self,
        repository: str,
        location: str,
        offset: int,
        data: bytes | AsyncIterator[bytes | memoryview],
        length: int = -1,
    ) -> str:
        """PATCH `data` (bytes, or a stream of exactly `length` bytes) at `offset`; returns the next
        location (which carries the new `_state`)."""
        size = len(data) if isinstance(data, bytes) else length
        response = await self._send(
            "PATCH",
            location,
            self.push_scope(repository),
            ok=(202,),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + size - 1}",
                "Content-Length": str(size),
            },
            content=data,
        )
        return self._location(response)

    async def finish_upload(
        self,
        repository: str,
        location: str,
        digest: str,
        data: bytes | AsyncIterator[bytes | memoryview] = b"",
        length: int = -1,
    ) -> None:
        """PUT the last bytes (bytes, or a stream of exactly `length` bytes; none by default) and
        the digest; the registry verifies the digest."""
        url = URL(location, encoded=True).update_query({"digest": digest})
        size = len(data) if isinstance(data, bytes) else length
        await self._send(
            "PUT",
            url,
            self.push_scope(repository),
            ok=(201, 204),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=data,
        )

    async def cancel_upload(self, repository: str, location: str) -> None:
        """Abandon an upload session (errors ignored: an expired session is already gone)."""
        try:
            await self._send("DELETE", location, self.push_scope(repository), ok=(204, 200, 202))
        except RegistryError:
            return

    async def push_blob(self, repository: str, digest: str, data: bytes) -> None:
        """Monolithic upload of a blob held in memory."""
        await self.finish_upload(repository, await self.start_upload(repository), digest, data)

    # ---- listings ---------------------------------------------------------------------------

    async def _paged(self, path: str, key: str, scope: str, page_size: int) -> list[str]:
        items: list[str] = []
        url: URL | None = URL(f"{self._url(path)}?n={page_size}", encoded=True)
        while url is not None:
            response = await self._send("GET", url, scope)
            items.extend(response.json().get(key) or [])
            link = response.headers.get("Link", "")
            match = re.search(r"<([^>]+)>", link)
            url = response.url.join(URL(match.group(1), encoded=True)) if match else None
        return items

    async def catalog(self, page_size: int = 100) -> list[str]:
        """Every repository, following `Link` pages."""
        return await self._paged("_catalog", "repositories", "registry:catalog:*", page_size)

    async def tags(self, repository: str, page_size: int = 100) -> list[str]:
        """Every tag of `repository`, following `Link` pages; [] when the repository is unknown."""
        try:
            return await self._paged(
                f"{repository}/tags/list", "tags", self.pull_scope(repository), page_size
            )
        except RegistryNotFound:
            return []
