"""Image import steps: reset a failed image, resolve the source, copy blobs (resumable), push
manifests, record the end.

Credentials are loaded here, from the image registry named by the import or else from the image
registries and image secrets whose server matches the source host; they never travel through
workflow inputs. Which addresses a source may reach is decided here too, from the database: a
registry an administrator registered (and the internal registry) may be on loopback or a private
network, any other source host may not; link-local and metadata addresses never.

Registry failures become `ApplicationError`s: authentication, not-found, refused addresses and
other 4xx answers are non-retryable; network trouble and 5xx retry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import image_status
from db import images as db
from db.encryption import SecretBox
from db.images import ImageImportJob
from db.session import SessionFactory
from domain.config import ImageConfig
from domain.failures import Failure
from domain.images import (
    INDEX_MANIFESTS,
    SINGLE_MANIFESTS,
    STATUS_READY,
    BadReference,
    BlobCopy,
    BlobPlan,
    BlobResult,
    ExternalProgress,
    FinishImport,
    ImageReference,
    ImportPlan,
    ManifestPlan,
    PushManifests,
    ResolveInput,
    RestartImport,
    SourceCheck,
    SourceVerdict,
    host_name,
    hostname_refusal,
    import_workflow_id,
    parse_reference,
    percent,
    platform_key,
    registry_location,
)
from domain.timefmt import utcnow
from drivers.oci_registry import (
    AddressRefused,
    Manifest,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryNotFound,
    RegistryUnreachable,
    address_guard,
)

ConfigSource = ImageConfig | Callable[[], ImageConfig]
"""The configuration, or a function returning the current one (read at every use)."""


@dataclass(frozen=True)
class _Endpoint:
    host: str
    scheme: str | None
    username: str
    password: str
    insecure: bool
    guarded: bool
    trusted: bool = False
    """Loopback and private addresses allowed for this host (an administrator registered it)."""


def as_application_error(err: RegistryError) -> ApplicationError:
    """The Temporal failure for a registry error: only transient ones are retried."""
    if isinstance(err, RegistryAuthError):
        return ApplicationError(str(err), type=Failure.AUTHENTICATION_FAILED, non_retryable=True)
    if isinstance(err, RegistryNotFound):
        return ApplicationError(str(err), type=Failure.NOT_FOUND, non_retryable=True)
    if isinstance(err, AddressRefused):
        return ApplicationError(str(err), type=Failure.INVALID, non_retryable=True)
    if isinstance(err, RegistryUnreachable):
        return connection_failed(err)
    if 400 <= err.status < 500 and err.status not in (408, 429):
        return ApplicationError(str(err), type=Failure.REGISTRY_REJECTED, non_retryable=True)
    return ApplicationError(str(err), type=Failure.REGISTRY_UNAVAILABLE)


def connection_failed(err: RegistryUnreachable) -> ApplicationError:
    """The Temporal failure for a registry that could not be reached (retried)."""
    return ApplicationError(f"registry connection failed: {err}", type=Failure.REGISTRY_UNAVAILABLE)


def image_gone(image_id: int) -> ApplicationError:
    return ApplicationError(
        f"image {image_id} was deleted during the import", type=Failure.NOT_FOUND, non_retryable=True
    )


def internal_endpoint(config: ImageConfig) -> tuple[str, str | None]:
    """(host[:port], scheme or None) of the internal registry; Invalid when none is configured."""
    if config.internal is None:
        raise ApplicationError("no internal registry is configured", type=Failure.INVALID, non_retryable=True)
    return registry_location(config.internal.address)


class ImageImportActivities:
    """Idempotent steps: a retry re-checks the target before sending anything.

    `config` is the image configuration or a function returning the current one: the worker
    passes `Settings.image_config`, so a platform whose internal registry is repointed while it
    runs (the tests do) uses the new one at once.
    """

    def __init__(self, sessions: SessionFactory, config: ConfigSource, box: SecretBox) -> None:
        self._sessions = sessions
        self._config_source = config
        self._box = box
        self._clients: dict[_Endpoint, RegistryClient] = {}

    @property
    def config(self) -> ImageConfig:
        """The configuration in force."""
        source = self._config_source
        return source if isinstance(source, ImageConfig) else source()

    async def aclose(self) -> None:
        """Close every cached registry connection."""
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    # ---- clients ----------------------------------------------------------------------------

    def _client(self, endpoint: _Endpoint) -> RegistryClient:
        client = self._clients.get(endpoint)
        if client is None:
            if len(self._clients) >= 32:
                oldest = next(iter(self._clients))
                asyncio.get_running_loop().create_task(self._clients.pop(oldest).aclose())
            config = self.config
            guard = address_guard(
                trusted_names=frozenset({host_name(endpoint.host).lower()})
                if endpoint.trusted
                else frozenset(),
                allow_private=config.allow_loopback_sources,
            )
            client = RegistryClient(
                endpoint.host,
                username=endpoint.username,
                password=endpoint.password,
                insecure=endpoint.insecure,
                scheme=endpoint.scheme,
                timeout=config.request_timeout_seconds,
                guard=guard if endpoint.guarded else None,
            )
            self._clients[endpoint] = client
        return client

    def target_client(self) -> RegistryClient:
        """The internal registry."""
        config = self.config
        location, scheme = internal_endpoint(config)
        assert config.internal is not None
        return self._client(
            _Endpoint(
                host=location,
                scheme=scheme,
                username=config.internal.username,
                password=config.internal.password,
                insecure=config.internal.insecure,
                guarded=False,
            )
        )

    async def source_client(self, ref: ImageReference, registry_id: int | None) -> RegistryClient:
        """A client for the source, with the credentials that apply to its host: the internal
        registry's own client when the source is there; else guarded, trusting loopback and
        private addresses only for the host of an image registry an administrator registered.
        Raises AddressRefused for a refused literal address (before any connection)."""
        config = self.config
        if config.internal is not None and registry_id is None and ref.host == internal_endpoint(config)[0]:
            return self.target_client()
        async with self._sessions() as session:
            found = await db.source_endpoint(
                session, self._box, host=ref.host, api_host=ref.api_host, registry_id=registry_id
            )
        trusted = found.registry_id is not None
        try:
            why = hostname_refusal(found.host, allow_private=trusted or config.allow_loopback_sources)
        except BadReference as exc:
            raise AddressRefused(f"source: {exc}") from exc
        if why:
            raise AddressRefused(why)
        endpoint = _Endpoint(
            found.host, found.scheme, found.username, found.password, found.insecure, True, trusted
        )
        return self._client(endpoint)

    # ---- activities -------------------------------------------------------------------------

    @activity.defn(name="images.check_source")
    async def check_source(self, check: SourceCheck) -> SourceVerdict:
        """Whether the source manifest exists and is readable (the import request answers with
        it at once, as upstream does); nothing is written."""
        ref = parse_reference(check.source)
        try:
            client = await self.source_client(ref, check.registry_id)
            digest = await client.manifest_digest(ref.repository, ref.reference)
            if digest is None:
                return SourceVerdict(problem=f"source image {ref} not found")
        except AddressRefused as exc:
            return SourceVerdict(problem=f"source: {exc}", refused=True)
        except RegistryAuthError:
            return SourceVerdict(
                problem=f"authentication to {ref.host} failed: check the registry's credentials"
            )
        except RegistryUnreachable as exc:
            cause = exc.__cause__ or exc
            return SourceVerdict(
                problem=f"source registry {ref.host} is unreachable: {cause.__class__.__name__}"
            )
        except RegistryError as exc:
            return SourceVerdict(problem=f"source registry {ref.host} refused the request: {exc}")
        return SourceVerdict(digest=digest)

    @activity.defn(name="images.reset")
    async def reset(self, params: RestartImport) -> bool:
        """Failed -> Importing for a new import (message, layers and job cleared, a new job
        recorded); False when the image is not Failed any more (or its deletion was requested)."""
        now = utcnow()
        job = ImageImportJob(
            image_id=params.image_id,
            workflow_id=import_workflow_id(params.image_id),
            source_ref=params.source,
            target_ref=params.target,
            source_registry_id=params.source_registry_id,
            started_at=now,
        )
        async with self._sessions() as session, session.begin():
            return await image_status.restart_import(
                session,
                image_id=params.image_id,
                job=job,
                user_id=params.user_id,
                user_name=params.user_name,
                now=now,
            )

    @activity.defn(name="images.resolve")
    async def resolve(self, params: ResolveInput) -> ImportPlan:
        """Read the source manifest (all platforms of an index); record blobs and image facts.

        With `target`, the target is asked (HEAD, in parallel) which blobs it holds already:
        those are recorded skipped and listed in `present`, so the workflow copies only the
        others. With `push_when_complete` and every blob there, the manifests are pushed and the
        image recorded Ready here too (`pushed`): an import with nothing to copy is one step."""
        ref = parse_reference(params.source)
        try:
            client = await self.source_client(ref, params.source_registry_id)
            top = await client.get_manifest(ref.repository, ref.reference)
            manifests, blobs, platforms = await _expand(client, ref.repository, top)
        except RegistryNotFound as err:
            message = f"source image {ref} not found ({err.code or err.status})"
            raise ApplicationError(message, type=Failure.NOT_FOUND, non_retryable=True) from err
        except RegistryError as err:
            raise as_application_error(err) from err
        present: list[str] = []
        if params.target:
            present = await self._present(parse_reference(params.target), list(blobs))
        await self._record_plan(params.image_id, top, blobs, platforms, present)
        plan = ImportPlan(blobs=list(blobs.values()), manifests=manifests, present=present)
        if params.target and params.push_when_complete and len(present) == len(blobs):
            plan.pushed = await self._push(params.image_id, params.target, manifests, finish=True)
        return plan

    async def _present(self, target: ImageReference, digests: list[str]) -> list[str]:
        """The digests the target repository already holds (asked in parallel)."""
        dst = self.target_client()
        bound = asyncio.Semaphore(8)

        async def there(digest: str) -> bool:
            async with bound:
                return await dst.blob_size(target.repository, digest) is not None

        try:
            found = await asyncio.gather(*(there(digest) for digest in digests))
        except RegistryError as err:
            raise as_application_error(err) from err
        return [digest for digest, held in zip(digests, found, strict=True) if held]

    async def _record_plan(
        self,
        image_id: int,
        top: Manifest,
        blobs: dict[str, BlobPlan],
        platforms: dict[str, dict[str, Any]],
        present: list[str],
    ) -> None:
        async with self._sessions() as session, session.begin():
            recorded = await image_status.record_plan(
                session,
                image_id=image_id,
                digest=top.digest,
                platforms=platforms,
                blobs=[(b.digest, b.media_type, b.size) for b in blobs.values()],
                now=utcnow(),
                present=set(present),
            )
        if not recorded:
            raise image_gone(image_id)

    @activity.defn(name="images.copy_blob")
    async def copy_blob(self, params: BlobCopy) -> BlobResult:
        """Copy one blob unless the target has it (HEAD) or can mount it; resumes a partial upload."""
        source = parse_reference(params.source)
        target = parse_reference(params.target)
        blob = params.blob
        dst = self.target_client()
        try:
            if await dst.blob_size(target.repository, blob.digest) is not None:
                await self._progress(params.image_id, blob.digest, "skipped", blob.size)
                return BlobResult(digest=blob.digest, outcome="skipped")
            if await self._try_mount(params, source, target, dst):
                await self._progress(params.image_id, blob.digest, "mounted", blob.size)
                return BlobResult(digest=blob.digest, outcome="mounted")
            src = await self.source_client(source, params.source_registry_id)
            sent = await self._stream_copy(params, src, source, dst, target)
        except RegistryError as err:
            raise as_application_error(err) from err
        await self._progress(params.image_id, blob.digest, "completed", blob.size)
        return BlobResult(digest=blob.digest, outcome="completed", bytes_sent=sent)

    async def _try_mount(
        self, params: BlobCopy, source: ImageReference, target: ImageReference, dst: RegistryClient
    ) -> bool:
        candidates: list[str] = []
        if registry_location(source.api_host)[0] == dst.host and source.repository != target.repository:
            candidates.append(source.repository)
        async with self._sessions() as session:
            other = await db.mount_candidate(
                session,
                registry_host=target.host,
                digest=params.blob.digest,
                exclude_image_id=params.image_id,
            )
        if other and other != target.repository:
            candidates.append(other)
        for repository in candidates:
            if await dst.mount_blob(target.repository, params.blob.digest, repository):
                return True
        return False

    async def _stream_copy(
        self,
        params: BlobCopy,
        src: RegistryClient,
        source: ImageReference,
        dst: RegistryClient,
        target: ImageReference,
    ) -> int:
        """Stream source -> target, hashing every byte; returns the bytes sent.

        A blob of at most one chunk goes in the request that closes the upload (PUT with the
        body: no intermediate point to resume from is lost, a cut request costs its session
        either way). A larger one goes in chunks (PATCH), each recorded as the point a retry
        resumes from. The digest is checked before the last byte is passed on, so a blob that
        does not match never completes an upload. No bytes moving for the request timeout (a
        target that stopped reading) fails the attempt, which is retried."""
        blob, repo = params.blob, target.repository
        chunk = max(1024 * 1024, self.config.chunk_bytes)
        location, offset = await self._resume_point(params.image_id, blob.digest, dst, repo)
        if offset == 0 and location is None:
            location = await dst.start_upload(repo)
        assert location is not None
        await self._progress(params.image_id, blob.digest, "downloading", offset, location)
        activity.heartbeat(_beat(blob, offset))
        sent = 0
        stall = max(1.0, self.config.request_timeout_seconds)
        async with src.open_blob(source.repository, blob.digest) as pieces:
            stream = _SourceStream(pieces, blob, skip=offset)
            try:
                async with asyncio.timeout(stall) as deadline:
                    reporter = asyncio.create_task(
                        self._report_in_flight(params.image_id, blob, stream, deadline, stall)
                    )
                    try:
                        if offset == 0 and blob.size <= chunk:
                            await dst.finish_upload(
                                repo, location, blob.digest, stream.take(blob.size), blob.size
                            )
                            return blob.size
                        while offset < blob.size:
                            length = min(chunk, blob.size - offset)
                            location = await dst.upload_chunk(
                                repo, location, offset, stream.take(length), length
                            )
                            offset += length
                            sent += length
                            await self._progress(
                                params.image_id, blob.digest, "downloading", offset, location
                            )
                            activity.heartbeat(_beat(blob, offset))
                        await stream.check()
                    finally:
                        reporter.cancel()
            except TimeoutError as exc:
                raise connection_failed(
                    RegistryUnreachable(f"no bytes of {blob.digest} moved for {stall:.0f} s")
                ) from exc
            except RegistryError:
                if stream.error is None:
                    raise
                await dst.cancel_upload(repo, location)
                raise stream.error from None  # the source's failure, not the upload it cut short
            except ApplicationError:
                await dst.cancel_upload(repo, location)
                raise
        await dst.finish_upload(repo, location, blob.digest)
        return sent

    async def _report_in_flight(
        self, image_id: int, blob: BlobPlan, stream: _SourceStream, deadline: asyncio.Timeout, stall: float
    ) -> None:
        """Every progress interval, show the bytes sent so far (inside a request, too), and push
        the stall deadline back while bytes move (no deadline once every byte is handed out:
        the registry's answer has the request timeout)."""
        loop = asyncio.get_running_loop()
        last = stream.moved
        while True:
            await asyncio.sleep(self.config.progress_interval_seconds)
            if stream.position >= blob.size:
                deadline.reschedule(None)
            elif stream.moved != last:
                last = stream.moved
                deadline.reschedule(loop.time() + stall)
            position = stream.position
            async with self._sessions() as session, session.begin():
                await image_status.set_layer_percent(
                    session, image_id=image_id, digest=blob.digest, progress=percent(position, blob.size)
                )
            activity.heartbeat(_beat(blob, position))

    async def _resume_point(
        self, image_id: int, digest: str, dst: RegistryClient, repo: str
    ) -> tuple[str | None, int]:
        """The upload session and offset recorded after the last chunk, when the registry agrees."""
        async with self._sessions() as session:
            layer = await db.get_layer(session, image_id=image_id, digest=digest)
        if layer is None or not layer.upload_url or layer.status != "downloading":
            return None, 0
        actual = await dst.upload_offset(repo, layer.upload_url)
        if actual is None or actual != layer.bytes_done:
            activity.logger.info(
                "upload of %s restarts: registry has %s bytes, expected %s", digest, actual, layer.bytes_done
            )
            return None, 0
        activity.logger.info("upload of %s resumes at byte %d", digest, actual)
        return layer.upload_url, actual

    async def _progress(
        self, image_id: int, digest: str, status: str, done: int, upload_url: str = ""
    ) -> None:
        async with self._sessions() as session, session.begin():
            changed = await image_status.set_layer_progress(
                session,
                image_id=image_id,
                digest=digest,
                status=status,
                bytes_done=done,
                now=utcnow(),
                upload_url=upload_url,
            )
        if not changed:
            raise image_gone(image_id)

    @activity.defn(name="images.push_manifests")
    async def push_manifests(self, params: PushManifests) -> str:
        """Push platform manifests by digest, then the top manifest under the tag; returns its
        digest. With `finish`, the image is recorded Ready as soon as the tag is verified."""
        return await self._push(params.image_id, params.target, params.manifests, finish=params.finish)

    async def _push(
        self, image_id: int, target_ref: str, manifests: list[ManifestPlan], *, finish: bool
    ) -> str:
        """Platform manifests (in parallel), then the top one under the tag, which is checked;
        then, with `finish`, Importing -> Ready (a no-op when the image is not Importing)."""
        target = parse_reference(target_ref)
        dst = self.target_client()

        async def put(item: ManifestPlan, reference: str) -> str:
            manifest = Manifest(item.media_type, item.digest, base64.b64decode(item.body_b64))
            return await dst.put_manifest(target.repository, reference, manifest)

        try:
            *children, top = manifests
            await asyncio.gather(*(put(item, item.digest) for item in children))
            digest = await put(top, target.tag)
            stored = await dst.manifest_digest(target.repository, target.tag)
        except RegistryError as err:
            raise as_application_error(err) from err
        if stored != digest:
            raise ApplicationError(
                f"target tag points at {stored}, expected {digest}", type=Failure.DIGEST_MISMATCH
            )
        if finish:
            async with self._sessions() as session, session.begin():
                await image_status.finish_import(
                    session, image_id=image_id, status=STATUS_READY, message="", now=utcnow()
                )
        return digest

    @activity.defn(name="images.finish")
    async def finish(self, params: FinishImport) -> bool:
        """Importing -> the final status (and message); False when the image is not Importing
        (removed meanwhile, or finished by an earlier attempt)."""
        if params.status not in ("Ready", "Failed"):
            raise ApplicationError(
                f"an import ends Ready or Failed, not {params.status}",
                type=Failure.INVALID,
                non_retryable=True,
            )
        async with self._sessions() as session, session.begin():
            return await image_status.finish_import(
                session, image_id=params.image_id, status=params.status, message=params.message, now=utcnow()
            )


class ImportProgressActivities:
    """The database step of the import workflow's `report_progress` update (control queue, so a
    report is recorded even while the images queue is busy)."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    @activity.defn(name="images.record_external_progress")
    async def record_external_progress(self, report: ExternalProgress) -> bool:
        """Store what an external copier reported; False when the image is not Importing."""
        async with self._sessions() as session, session.begin():
            return await image_status.record_external_progress(
                session, image_id=report.image_id, layers=report.layers, now=utcnow()
            )


def _beat(blob: BlobPlan, offset: int) -> dict[str, Any]:
    """Heartbeat details (shown under the pending activity in the Temporal UI)."""
    return {"digest": blob.digest, "bytes": offset, "size": blob.size, "percent": percent(offset, blob.size)}


class _SourceStream:
    """A source blob as a byte stream, hashed as it is read. The first `skip` bytes (already at the
    target) are hashed but not passed on; `take` hands out the next bytes for one upload request.
    Before the blob's last byte is handed out, the rest of the source is read and digest and size
    are checked (`check`): a mismatch raises there, so the request carrying it never completes.

    Hashing runs inline: measured, handing each piece to a thread cost more CPU and time than it
    saved (hashlib does ~1.4 GB/s here; pieces are at most a read buffer). Pieces are passed on
    as they arrive; one split at a chunk boundary is a memoryview, not a copy."""

    def __init__(self, pieces: AsyncIterator[bytes], blob: BlobPlan, skip: int) -> None:
        self._pieces = pieces
        self._blob = blob
        self._hasher = hashlib.sha256()
        self._skip = skip
        self._carry: memoryview | None = None
        self._checked = False
        self.read = 0
        self.given = 0
        self.error: Exception | None = None
        """What `take` raised (inside an upload request, which reports only that it was cut)."""

    @property
    def position(self) -> int:
        """Offset in the blob of the next byte to hand out."""
        return self._skip + self.given

    @property
    def moved(self) -> tuple[int, int]:
        """Changes while bytes move (read from the source or handed to the target)."""
        return self.read, self.given

    async def _next(self) -> memoryview:
        if self._carry is not None:
            data, self._carry = self._carry, None
            return data
        while True:
            piece = await anext(self._pieces, b"")
            if not piece:
                return memoryview(b"")
            self._hasher.update(piece)
            start = self.read
            self.read += len(piece)
            if self.read <= self._skip:
                continue
            view = memoryview(piece)
            return view[self._skip - start :] if start < self._skip else view

    async def take(self, limit: int) -> AsyncIterator[memoryview]:
        """The next `limit` bytes; raises (DigestMismatch) when the source ends early, and before
        the blob's last byte when it does not match."""
        try:
            given = 0
            while given < limit:
                data = await self._next()
                if not data:
                    await self.check()  # the source ended early: fails
                    raise self._mismatch()
                if given + len(data) > limit:
                    data, self._carry = data[: limit - given], data[limit - given :]
                given += len(data)
                self.given += len(data)
                if self.position >= self._blob.size:
                    await self.check()
                yield data
        except Exception as exc:
            self.error = self.error or exc
            raise

    async def check(self) -> None:
        """Read (and hash) whatever the source still sends, then compare digest and size."""
        if self._checked:
            return
        while await self._next():
            pass
        if "sha256:" + self._hasher.hexdigest() != self._blob.digest or self.read != self._blob.size:
            raise self._mismatch()
        self._checked = True

    def _mismatch(self) -> ApplicationError:
        return ApplicationError(
            f"blob {self._blob.digest} read from the source has digest "
            f"sha256:{self._hasher.hexdigest()} ({self.read} bytes)",
            type=Failure.DIGEST_MISMATCH,
        )


async def _expand(
    client: RegistryClient, repository: str, top: Manifest
) -> tuple[list[ManifestPlan], dict[str, BlobPlan], dict[str, dict[str, Any]]]:
    """Manifests (children first, top last), distinct blobs and per-platform facts of `top`."""
    manifests: list[ManifestPlan] = []
    blobs: dict[str, BlobPlan] = {}
    platforms: dict[str, dict[str, Any]] = {}

    def add_blobs(document: dict[str, Any]) -> int:
        total = 0
        for desc in [document.get("config") or {}, *(document.get("layers") or [])]:
            if desc.get("digest"):
                size = int(desc.get("size", 0))
                blobs.setdefault(
                    desc["digest"],
                    BlobPlan(digest=desc["digest"], size=size, media_type=desc.get("mediaType", "")),
                )
                total += size
        return total

    def plan(manifest: Manifest, platform: str = "") -> ManifestPlan:
        return ManifestPlan(
            digest=manifest.digest,
            media_type=manifest.media_type,
            body_b64=base64.b64encode(manifest.body).decode(),
            platform=platform,
        )

    document = json.loads(top.body)
    if top.media_type in INDEX_MANIFESTS:
        for desc in document.get("manifests") or []:
            child = await client.get_manifest(repository, desc["digest"])
            if child.media_type not in SINGLE_MANIFESTS:
                raise RegistryError(
                    f"nested index {child.digest} ({child.media_type}) is not supported", status=400
                )
            info = desc.get("platform") or {}
            key = platform_key(info.get("os", ""), info.get("architecture", ""), info.get("variant", ""))
            size = add_blobs(json.loads(child.body))
            platforms.setdefault(
                key or child.digest,
                {
                    "digest": child.digest,
                    "size": size,
                    "os": info.get("os", ""),
                    "arch": info.get("architecture", ""),
                },
            )
            manifests.append(plan(child, key or "unknown"))
    elif top.media_type in SINGLE_MANIFESTS:
        size = add_blobs(document)
        config = document.get("config") or {}
        facts: dict[str, Any] = {}
        if config.get("digest") and int(config.get("size", 0)) < 4 * 1024 * 1024:
            facts = json.loads(await client.read_blob(repository, config["digest"]))
        os_name, arch = str(facts.get("os", "")), str(facts.get("architecture", ""))
        platforms[platform_key(os_name, arch) or "unknown"] = {
            "digest": top.digest,
            "size": size,
            "os": os_name,
            "arch": arch,
        }
    else:
        raise RegistryError(f"manifest media type {top.media_type or 'unknown'} is not supported", status=400)
    manifests.append(plan(top))
    return manifests, blobs, platforms
