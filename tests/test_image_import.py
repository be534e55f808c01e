"""The import workflow against real registries: a worker killed mid-copy resumes without re-sending
finished layers; wrong credentials and missing tags fail once, with a readable message."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

from db import image_status
from db import images as db
from db.image_registries import ImageRegistry
from db.images import Image, ImageImportJob
from domain.images import (
    STATUS_FAILED,
    STATUS_IMPORTING,
    STATUS_READY,
    ImportResult,
    ImportSpec,
    parse_reference,
    target_reference,
)
from domain.timefmt import utcnow
from tests.conftest import Platform
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.registry import (
    Registry,
    Throttle,
    internal_registry_at,
    random_image,
    restart_empty,
    running_registries,
    skopeo_digest,
    skopeo_push,
    small_image,
)
from workflows.image_import import ImageImportWorkflow, workflow_id

PORTS = {"source": (15010, "", ""), "locked": (15011, "puller", "right-password"), "target": (15012, "", "")}
THROTTLE_PORT = 15013
LAYERS, LAYER_BYTES = 4, 3 * 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def regs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Registry]]:
    root = tmp_path_factory.mktemp("image-import")
    with running_registries(root, PORTS) as started:
        skopeo_push(
            random_image(root / "big", layers=LAYERS, layer_bytes=LAYER_BYTES),
            started["source"],
            "big/data:1",
        )
        skopeo_push(small_image(root / "small"), started["locked"], "private/app:1")
        yield started


@pytest.fixture
async def target(platform: Platform, regs: dict[str, Registry]) -> AsyncIterator[Registry]:
    """An empty target registry, which the platform's own images worker pushes to."""
    regs["target"] = restart_empty(regs["target"])
    with internal_registry_at(platform.settings, regs["target"].host):
        yield regs["target"]


async def add_registry(platform: Platform, reg: Registry, password: str = "") -> int:
    now = utcnow()
    async with platform.state.sessions() as session, session.begin():
        row = ImageRegistry(
            name=reg.name,
            url=f"http://{reg.host}",
            username=reg.username,
            password_encrypted=platform.state.box.encrypt(password),
            is_default=False,
            insecure=True,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        await session.flush()
        return row.id


async def add_image(platform: Platform, source: str, target_host: str) -> tuple[int, str]:
    """An Importing image row (as the API writes it); returns (id, target reference)."""
    ref = parse_reference(source)
    target_ref = target_reference(target_host, ref)
    target = str(target_ref)
    now = utcnow()
    async with platform.state.sessions() as session, session.begin():
        image = Image(
            tag=target,
            registry_host=target_host,
            repository=target_ref.repository,
            image_tag=ref.tag,
            source=source,
            description="",
            status=STATUS_IMPORTING,
            message="",
            digest="",
            size=0,
            arch="",
            os="",
            platforms={},
            include_type="import",
            created_by="test",
            created_by_name="test",
            created_at=now,
            updated_at=now,
        )
        session.add(image)
        await session.flush()
        session.add(
            ImageImportJob(
                image_id=image.id,
                workflow_id=workflow_id(image.id),
                source_ref=source,
                target_ref=target,
                started_at=now,
            )
        )
        return image.id, target


async def start(
    platform: Platform, image_id: int, source: str, target: str, queue: str, **extra: Any
) -> WorkflowHandle[Any, ImportResult]:
    spec = ImportSpec(
        image_id=image_id,
        source=source,
        target=target,
        activity_queue=queue,
        step_timeout_seconds=30,
        heartbeat_timeout_seconds=2,
        **extra,
    )
    return await platform.state.temporal.start_workflow(
        ImageImportWorkflow.run, spec, id=workflow_id(image_id), task_queue=platform.settings.queues.control
    )


async def activity_attempts(handle: WorkflowHandle[Any, Any], activity_type: str) -> list[int]:
    """The attempt numbers of every started `activity_type` task in the workflow's history."""
    scheduled: dict[int, str] = {}
    attempts = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if scheduled.get(attrs.scheduled_event_id) == activity_type:
                attempts.append(attrs.attempt)
    return attempts


async def test_wrong_credentials_fail_once_without_retry_storm(
    api: object, platform: Platform, target: Registry, regs: dict[str, Registry]
) -> None:
    locked = regs["locked"]
    await add_registry(platform, locked, password="wrong-password")
    source = f"{locked.host}/private/app:1"
    image_id, target_ref = await add_image(platform, source, target.host)
    before = len(locked.access_log())
    handle = await start(platform, image_id, source, target_ref, platform.settings.queues.images)
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == STATUS_FAILED and "authentication failed" in result.message
    assert "wrong-password" not in result.message
    assert await activity_attempts(handle, "images.resolve") == [1]
    assert len(locked.access_log()) - before <= 2  # the challenge and one refused try
    async with platform.state.sessions() as session:
        image = await db.get_image(session, image_id=image_id)
        assert image is not None and image.status == STATUS_FAILED and "authentication" in image.message


async def test_missing_tag_fails_with_readable_message(
    api: object, platform: Platform, target: Registry, regs: dict[str, Registry]
) -> None:
    await add_registry(platform, regs["source"])
    source = f"{regs['source'].host}/big/data:gone"
    image_id, target_ref = await add_image(platform, source, target.host)
    handle = await start(platform, image_id, source, target_ref, platform.settings.queues.images)
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == STATUS_FAILED
    assert result.message == f"source image {source} not found (MANIFEST_UNKNOWN)"
    assert await activity_attempts(handle, "images.resolve") == [1]


def spawn_worker(platform: Platform, queue: str, target_host: str, log: Path) -> subprocess.Popen[bytes]:
    settings = platform.settings
    env = {
        **os.environ,
        "PRIMUS_DATA_DIR": str(settings.data_dir),
        "PRIMUS_DATABASE_URL": settings.sqlalchemy_url,
        "PRIMUS_TEMPORAL_ADDRESS": settings.temporal_address,
        "PRIMUS_SECRET_KEY": settings.secret_key or "",
        "PRIMUS_QUEUE_IMAGES": queue,
        "PRIMUS_IMAGES_INTERNAL_REGISTRY": target_host,
        "PRIMUS_IMAGES_INTERNAL_INSECURE": "true",
        "PRIMUS_IMAGES_CHUNK_BYTES": str(1024 * 1024),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.image_worker"], cwd=ROOT, env=env, stdout=out, stderr=out
        )


def upload_sessions(registry: Registry) -> tuple[int, dict[str, int]]:
    """(upload sessions started, sessions finished per digest) from the registry's access log."""
    started = 0
    finished: dict[str, int] = {}
    for method, target, status in registry.access_log():
        if method == "POST" and target.split("?")[0].endswith("/blobs/uploads/") and status == 202:
            started += 1
        match = re.search(r"[?&]digest=(sha256(?::|%3A)[0-9a-f]{64})", target)
        if method == "PUT" and "/blobs/uploads/" in target and status == 201 and match:
            digest = match.group(1).replace("%3A", ":")
            finished[digest] = finished.get(digest, 0) + 1
    return started, finished


async def test_worker_killed_mid_import_resumes_without_resending(
    api: object, platform: Platform, target: Registry, regs: dict[str, Registry], tmp_path: Path
) -> None:
    source_reg = regs["source"]
    await add_registry(platform, source_reg)
    throttle = Throttle(upstream_port=target.port, port=THROTTLE_PORT, bytes_per_second=4 * 1024 * 1024)
    await throttle.start()
    queue = f"kill-images-{uuid.uuid4().hex[:8]}"
    source = f"{source_reg.host}/big/data:1"
    image_id, target_ref = await add_image(platform, source, throttle.host)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(spawn_worker(platform, queue, throttle.host, tmp_path / "worker.log"))
        handle = await start(platform, image_id, source, target_ref, queue, parallel_layers=1)
        done_at_kill: list[str] = []
        for _ in range(1200):
            async with platform.state.sessions() as session:
                layers = await db.layers_of(session, image_id=image_id)
            big_done = [x.digest for x in layers if x.status == "completed" and x.size >= LAYER_BYTES]
            copying = [x for x in layers if x.status == "downloading" and x.bytes_done > 0]
            if len(big_done) >= 2 and copying:
                done_at_kill = [x.digest for x in layers if x.status == "completed"]
                break
            await asyncio.sleep(0.02)
        assert done_at_kill, "the import never reached the middle of a layer"
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        workers.append(spawn_worker(platform, queue, throttle.host, tmp_path / "worker.log"))
        result = await asyncio.wait_for(handle.result(), 120)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        await throttle.stop()
    assert result.status == STATUS_READY, result
    assert (
        skopeo_digest(target, f"sync/127.0.0.1_{source_reg.port}/big/data:1")
        == skopeo_digest(source_reg, "big/data:1")
        == result.digest
    )
    async with platform.state.sessions() as session:
        layers = await db.layers_of(session, image_id=image_id)
    assert len(layers) == LAYERS + 1 and {x.status for x in layers} == {"completed"}
    started, finished = upload_sessions(target)
    assert set(finished) == {x.digest for x in layers}
    assert all(count == 1 for count in finished.values()), finished  # no blob was uploaded twice
    # the interrupted session is resumed when the kill fell between chunks; docker-registry drops a
    # session cut mid-PATCH (its size no longer matches the signed state), which costs one session
    assert len(layers) <= started <= len(layers) + 1
    # finished copies are in the history: the retried activity was the interrupted one only
    retried = [a for a in await activity_attempts(handle, "images.copy_blob") if a > 1]
    assert len(retried) == 1
    # the recorded history (with its retry) replays deterministically on the current workflow code
    await replay_and_keep(handle, [ImageImportWorkflow], "image-import-worker-killed")


async def test_copy_resumes_a_recorded_upload_session(
    api: object, platform: Platform, target: Registry, regs: dict[str, Registry]
) -> None:
    """A retried copy continues the session the last attempt recorded (nothing before it is re-sent)."""
    from temporalio.testing import ActivityEnvironment

    from activities.image_import import ImageImportActivities
    from domain.images import BlobCopy, BlobPlan, ResolveInput
    from drivers.oci_registry import RegistryClient

    source_reg = regs["source"]
    await add_registry(platform, source_reg)
    source = f"{source_reg.host}/big/data:1"
    image_id, target_ref = await add_image(platform, source, target.host)
    repository = parse_reference(target_ref).repository  # sync/127.0.0.1_<port>/big/data
    config = dataclasses.replace(platform.settings.image_config(), chunk_bytes=1024 * 1024)
    activities = ImageImportActivities(platform.state.sessions, config, platform.state.box)
    env = ActivityEnvironment()
    try:
        plan = await env.run(activities.resolve, ResolveInput(image_id=image_id, source=source))
        blob = max(plan.blobs, key=lambda b: b.size)
        # an earlier attempt sent the first MiB and recorded its session
        async with (
            RegistryClient(source_reg.host, insecure=True) as src,
            RegistryClient(target.host, insecure=True) as dst,
        ):
            head = (await src.read_blob("big/data", blob.digest))[: 1024 * 1024]
            location = await dst.start_upload(repository)
            location = await dst.upload_chunk(repository, location, 0, head)
        async with platform.state.sessions() as session, session.begin():
            await image_status.set_layer_progress(
                session,
                image_id=image_id,
                digest=blob.digest,
                status="downloading",
                bytes_done=len(head),
                now=utcnow(),
                upload_url=location,
            )
        before = target.access_log()
        copy = BlobCopy(
            image_id=image_id, source=source, target=target_ref, blob=BlobPlan(**blob.model_dump())
        )
        result = await env.run(activities.copy_blob, copy)
    finally:
        await activities.aclose()
    assert result.outcome == "completed" and result.bytes_sent == blob.size - 1024 * 1024
    new = target.access_log()[len(before) :]
    assert not [r for r in new if r[0] == "POST" and "/blobs/uploads/" in r[1]]  # no new session
    patches = [r for r in new if r[0] == "PATCH"]
    assert len(patches) == -(-(blob.size - 1024 * 1024) // (1024 * 1024))
    async with RegistryClient(target.host, insecure=True) as dst:
        assert await dst.blob_size(repository, blob.digest) == blob.size


async def test_a_blob_within_one_chunk_goes_in_the_closing_put(
    api: object, platform: Platform, target: Registry, regs: dict[str, Registry]
) -> None:
    """Up to one chunk: POST then PUT with the body (no PATCH); the layer reads completed."""
    from temporalio.testing import ActivityEnvironment

    from activities.image_import import ImageImportActivities
    from domain.images import BlobCopy, BlobPlan, ResolveInput

    source_reg = regs["source"]
    await add_registry(platform, source_reg)
    source = f"{source_reg.host}/big/data:1"
    image_id, target_ref = await add_image(platform, source, target.host)
    activities = ImageImportActivities(
        platform.state.sessions, platform.settings.image_config(), platform.state.box
    )
    env = ActivityEnvironment()
    try:
        plan = await env.run(
            activities.resolve, ResolveInput(image_id=image_id, source=source, target=target_ref)
        )
        assert plan.present == [] and not plan.pushed
        blob = max(plan.blobs, key=lambda b: b.size)
        before = len(target.access_log())
        copy = BlobCopy(
            image_id=image_id, source=source, target=target_ref, blob=BlobPlan(**blob.model_dump())
        )
        result = await env.run(activities.copy_blob, copy)
    finally:
        await activities.aclose()
    assert result.outcome == "completed" and result.bytes_sent == blob.size
    uploads = [(m, s) for m, t, s in target.access_log()[before:] if "/blobs/uploads/" in t]
    assert uploads == [("POST", 202), ("PUT", 201)], uploads
    async with platform.state.sessions() as session:
        layer = await db.get_layer(session, image_id=image_id, digest=blob.digest)
    assert layer is not None and (layer.status, layer.bytes_done, layer.progress) == (
        "completed",
        blob.size,
        100,
    )


@pytest.mark.parametrize("off_by", [1, -1])
async def test_a_blob_that_does_not_match_never_completes_an_upload(
    api: object, platform: Platform, target: Registry, regs: dict[str, Registry], off_by: int
) -> None:
    """The source sends fewer or more bytes than planned: DigestMismatch (retried), raised before
    the last byte reaches the target, whose upload is abandoned; the target never holds the blob."""
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.image_import import ImageImportActivities
    from domain.failures import Failure
    from domain.images import BlobCopy, BlobPlan, ResolveInput
    from drivers.oci_registry import RegistryClient

    source_reg = regs["source"]
    await add_registry(platform, source_reg)
    source = f"{source_reg.host}/big/data:1"
    image_id, target_ref = await add_image(platform, source, target.host)
    for chunk in (1024 * 1024, 32 * 1024 * 1024):  # chunked, and one closing PUT
        config = dataclasses.replace(platform.settings.image_config(), chunk_bytes=chunk)
        activities = ImageImportActivities(platform.state.sessions, config, platform.state.box)
        env = ActivityEnvironment()
        try:
            plan = await env.run(activities.resolve, ResolveInput(image_id=image_id, source=source))
            blob = max(plan.blobs, key=lambda b: b.size)
            wrong = BlobPlan(digest=blob.digest, size=blob.size + off_by, media_type=blob.media_type)
            with pytest.raises(ApplicationError) as raised:
                await env.run(
                    activities.copy_blob,
                    BlobCopy(image_id=image_id, source=source, target=target_ref, blob=wrong),
                )
        finally:
            await activities.aclose()
        assert raised.value.type == Failure.DIGEST_MISMATCH and not raised.value.non_retryable, raised.value
        async with RegistryClient(target.host, insecure=True) as dst:
            assert await dst.blob_size(parse_reference(target_ref).repository, blob.digest) is None
        assert not [t for m, t, s in target.access_log() if m == "PUT" and "digest=" in t and s == 201]
