"""Image steps besides the copy: stop an import, delete a manifest, remove the record, check the
internal registry.

All run on the images task queue. Each is idempotent: stopping an import that is not running,
deleting a manifest the registry no longer has (404) or removing a record already gone is a
success, so a retried step never fails on what its earlier attempt did.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.image_import import ConfigSource, as_application_error
from db import image_status
from db import images as db
from db.session import SessionFactory
from domain.config import ImageConfig
from domain.images import (
    ACTIVITY_CANCEL_IMPORT,
    ACTIVITY_DELETE_MANIFEST,
    ACTIVITY_REGISTRY_STATS,
    ACTIVITY_REMOVE_IMAGE,
    ManifestOutcome,
    RegistryCheck,
    import_workflow_id,
    registry_location,
)
from domain.timefmt import utcnow
from drivers.oci_registry import RegistryClient, RegistryError

POLL_SECONDS = 0.2
"""How often a stopping import is looked at."""


class ImageActivities:
    """Deletion steps and the registry check; `client` reaches Temporal (to stop an import)."""

    def __init__(self, sessions: SessionFactory, client: Client, config: ConfigSource) -> None:
        self._sessions = sessions
        self._client = client
        self._config_source = config

    @property
    def config(self) -> ImageConfig:
        """The configuration in force."""
        source = self._config_source
        return source if isinstance(source, ImageConfig) else source()

    def _internal_client(self, config: ImageConfig) -> RegistryClient:
        assert config.internal is not None
        host, scheme = registry_location(config.internal.address)
        return RegistryClient(
            host,
            username=config.internal.username,
            password=config.internal.password,
            insecure=config.internal.insecure,
            scheme=scheme,
            timeout=config.request_timeout_seconds,
        )

    @activity.defn(name=ACTIVITY_CANCEL_IMPORT)
    async def cancel_import(self, image_id: int) -> bool:
        """Cancel the image's running import and wait until it has stopped (its manifest push
        included); True when one was running."""
        handle = self._client.get_workflow_handle(import_workflow_id(image_id))
        cancelled = False
        while True:
            try:
                status = (await handle.describe()).status
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    return cancelled
                raise
            if status != WorkflowExecutionStatus.RUNNING:
                return cancelled
            if not cancelled:
                try:
                    await handle.cancel()
                except RPCError as err:
                    if err.status != RPCStatusCode.NOT_FOUND:
                        raise
                cancelled = True
            activity.heartbeat("waiting for the import to stop")
            await asyncio.sleep(POLL_SECONDS)

    @activity.defn(name=ACTIVITY_DELETE_MANIFEST)
    async def delete_manifest(self, image_id: int) -> ManifestOutcome:
        """Delete the image's manifest from the internal registry unless another image shares it;
        a manifest already gone (404) counts as deleted."""
        async with self._sessions() as session:
            image = await db.get_image(session, image_id=image_id, include_deleting=True)
            if image is None or image.deleting_at is None:
                return "gone" if image is None else "skipped"
            shared = bool(image.digest) and await db.same_manifest_elsewhere(
                session,
                registry_host=image.registry_host,
                repository=image.repository,
                digest=image.digest,
                exclude_id=image_id,
            )
            repository, digest, registry_host = image.repository, image.digest, image.registry_host
        config = self.config
        if not digest or config.internal is None:
            return "skipped"
        if registry_location(config.internal.address)[0] != registry_host:
            return "skipped"
        if shared:
            return "shared"
        try:
            async with self._internal_client(config) as client:
                deleted = await client.delete_manifest(repository, digest)
        except RegistryError as err:
            raise as_application_error(err) from err
        return "deleted" if deleted else "absent"

    @activity.defn(name=ACTIVITY_REMOVE_IMAGE)
    async def remove(self, image_id: int) -> bool:
        """Remove the record (job and layers with it); False when it was already gone."""
        async with self._sessions() as session, session.begin():
            return await image_status.remove_image(session, image_id=image_id)

    @activity.defn(name=ACTIVITY_REGISTRY_STATS)
    async def registry_stats(self) -> RegistryCheck:
        """Ping the internal registry, count its catalogue, and record the outcome."""
        config = self.config
        if config.internal is None:
            return RegistryCheck(
                registry="", status="unhealthy", message="no internal registry is configured"
            )
        host = registry_location(config.internal.address)[0]
        check = RegistryCheck(registry=host)
        async with self._internal_client(config) as client:
            try:
                await client.ping()
                check.status = "healthy"
            except RegistryError as err:
                check.message = f"GET /v2/ failed: {err or err.__class__.__name__}"
            if check.status == "healthy":
                try:
                    check.repositories = len(await client.catalog(page_size=1000))
                except (RegistryError, ValueError) as err:
                    check.message = f"the catalogue could not be listed: {err or err.__class__.__name__}"
        async with self._sessions() as session, session.begin():  # a lost first-insert race retries
            await db.record_registry_check(session, check=check, now=utcnow())
        return check
