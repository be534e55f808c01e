"""Node activities: the SSH steps of onboarding (ssh queue) and their database records (control queue).

Every step is idempotent: reaching and fact discovery only read, setting the host name is a no-op
when it is already set, and addons already installed for the node's template are skipped (the
database keeps the list; heartbeat details carry the index being worked on).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import case, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import nodes as db
from db.encryption import DecryptionError, SecretBox
from db.node_flavors import NodeFlavor
from db.node_templates import NodeTemplate
from db.nodes import Node
from db.secrets import ssh_credentials
from db.session import SessionFactory
from domain import addon_catalogue
from domain import nodes as rules
from domain.errors import PrimusError
from domain.timefmt import utcnow
from drivers.ssh import (
    CommandFailed,
    ConnectionPool,
    SSHConnection,
    SSHError,
    SSHTarget,
    Unreachable,
    connect,
)
from primus_safe.settings import Settings

T = TypeVar("T")
ADDON_DIR = ".primus-safe/addons"
LOG_FLUSH_SECONDS = 0.5
WRITE_ATTEMPTS = 6
POOL_IDLE_SECONDS = 30.0


def _fail(message: str, kind: str, *, retryable: bool = False) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=not retryable)


def _ssh_failure(err: SSHError) -> ApplicationError:
    """Unreachable hosts are retried (bounded by the retry policy); everything else is final."""
    return _fail(err.reason, err.kind, retryable=isinstance(err, Unreachable))


class NodeActivities:
    """Holds the database, the secret box, settings and the thread pool for blocking SSH calls."""

    def __init__(self, sessions: SessionFactory, box: SecretBox, settings: Settings) -> None:
        self._sessions = sessions
        self._box = box
        self._settings = settings
        self._threads = ThreadPoolExecutor(max_workers=settings.ssh_max_parallel, thread_name_prefix="ssh")
        self._pool = ConnectionPool(idle_seconds=POOL_IDLE_SECONDS)

    # --- helpers ----------------------------------------------------------------------------------

    async def _blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn)

    async def _load(self, node_id: str) -> Node:
        async with self._sessions() as session:
            node = await db.get_node(session, node_id=node_id)
        if node is None:
            raise _fail(f"node {node_id} not found", "NotFound")
        return node

    async def _target(self, node: Node) -> SSHTarget:
        try:
            async with self._sessions() as session:
                creds = await ssh_credentials(session, self._box, secret_id=node.ssh_secret_id)
        except PrimusError as exc:
            raise _fail(f"ssh secret {node.ssh_secret_id}: {exc.message}", "Invalid") from exc
        except DecryptionError as exc:
            raise _fail(str(exc), "Invalid") from exc
        return SSHTarget(
            host=node.private_ip,
            port=node.port,
            username=creds.username,
            password=creds.password,
            private_key_pem=creds.private_key_pem,
            known_fingerprint=node.host_key_fingerprint or None,
        )

    @contextlib.asynccontextmanager
    async def _ssh(
        self, node: Node, *, reuse: bool = True, keep: bool = True
    ) -> AsyncIterator[SSHConnection]:
        """A logged-in connection: from the pool when `reuse`, back into it afterwards when `keep`
        (consecutive steps share one login); closed when the block raises."""
        target = await self._target(node)
        conn = self._pool.take(target) if reuse else None
        if conn is None:
            try:
                conn = await self._blocking(
                    lambda: connect(target, timeout=self._settings.ssh_connect_timeout_seconds)
                )
            except SSHError as err:
                raise _ssh_failure(err) from err
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        if keep:
            self._pool.give(target, conn)
        else:
            conn.close()

    async def _write(self, write: Callable[[AsyncSession], Awaitable[None]]) -> None:
        """Run `write` in its own transaction, retrying while SQLite reports the database locked
        (many nodes onboarding at once); other errors propagate."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self._sessions() as session, session.begin():
                    await write(session)
                return
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == WRITE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.1 * 2**attempt)

    async def _update(self, node_id: str, **values: Any) -> None:
        """One UPDATE statement (a write first, so SQLite never has to upgrade a read snapshot)."""

        async def write(session: AsyncSession) -> None:
            await session.execute(
                update(Node).where(Node.id == node_id).values(**values, updated_at=utcnow())
            )

        await self._write(write)

    async def _log(self, node_id: str, *lines: str, level: str = "INFO") -> None:
        """Append log lines; a node deleted meanwhile just loses them."""

        async def write(session: AsyncSession) -> None:
            db.add_log(session, node_id=node_id, lines=lines, at=utcnow(), level=level)

        with contextlib.suppress(IntegrityError):
            await self._write(write)

    async def _begin(self, node_id: str, step: rules.Step, index: int = 0) -> Node:
        activity.heartbeat({"step": rules.STEP_TITLES[step], "index": index})
        node = await self._load(node_id)
        if node.step != step:
            await self._update(node_id, step=step)
            await self._log(node_id, f"step {rules.STEP_TITLES[step]} started")
        return node

    async def _run_logged(
        self, conn: SSHConnection, node_id: str, argv: list[str], *, limit: float, beat: Callable[[], None]
    ) -> None:
        """Run a command, storing each output line as a node log line while it runs."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def on_line(line: str) -> None:
            loop.call_soon_threadsafe(lines.put_nowait, line)

        job = loop.run_in_executor(self._threads, lambda: conn.run(argv, timeout=limit, on_line=on_line))
        while True:
            done = await _wait_briefly(job, LOG_FLUSH_SECONDS)
            batch = _drain(lines)
            if batch:
                await self._log(node_id, *batch)
            beat()
            if done:
                break
        job.result()

    # --- onboarding steps (ssh queue) -------------------------------------------------------------

    @activity.defn(name="node.reach")
    async def reach(self, node_id: str) -> str:
        """Log in with the node's secret; trusts the host key on first use. Returns the fingerprint."""
        node = await self._begin(node_id, "reach")
        async with self._ssh(node, reuse=False) as conn:
            try:
                await self._blocking(
                    lambda: conn.run(["true"], timeout=self._settings.ssh_connect_timeout_seconds)
                )
            except SSHError as err:
                raise _ssh_failure(err) from err
        if not node.host_key_fingerprint:
            await self._update(node_id, host_key_fingerprint=conn.host_fingerprint)
            await self._log(node_id, f"trusted host key {conn.host_fingerprint} on first use")
        await self._log(node_id, f"reached {node.private_ip}:{node.port} over SSH")
        return conn.host_fingerprint

    @activity.defn(name="node.set_hostname")
    async def set_hostname(self, node_id: str) -> bool:
        """Set the machine's host name through the command table; False when there was nothing to do."""
        node = await self._begin(node_id, "hostname")
        if not node.hostname:
            return False
        if rules.hostname_error(node.hostname):
            raise _fail(f"invalid host name {node.hostname!r}", "HostnameFailed")
        template = self._settings.node_commands.get("set_hostname")
        if not template:
            raise _fail("no set_hostname command is configured (PRIMUS_NODE_COMMANDS)", "HostnameFailed")
        async with self._ssh(node) as conn:
            try:
                current = await self._blocking(lambda: conn.run(["hostname"], timeout=30).output.strip())
                if current == node.hostname:
                    await self._log(node_id, f"host name is already {node.hostname}")
                    return False
                argv = rules.render_command(template, hostname=node.hostname)
                await self._run_logged(conn, node_id, argv, limit=60, beat=lambda: activity.heartbeat())
            except CommandFailed as err:
                await self._log(node_id, f"setting the host name failed: {err.reason}", level="ERROR")
                raise _fail(
                    f"setting the host name to {node.hostname} failed: {err.reason}", "HostnameFailed"
                ) from err
            except SSHError as err:
                raise _ssh_failure(err) from err
        await self._log(node_id, f"host name set to {node.hostname}")
        return True

    @activity.defn(name="node.discover_facts")
    async def discover_facts(self, node_id: str) -> list[str]:
        """Read CPU, memory, GPUs and disks; compare with the flavor. Returns the mismatches."""
        node = await self._begin(node_id, "facts")
        async with self._ssh(node) as conn:
            try:
                result = await self._blocking(lambda: conn.run(["sh", "-c", rules.FACTS_SCRIPT], timeout=60))
            except SSHError as err:
                raise _ssh_failure(err) from err
        facts = rules.parse_facts(result.output)
        async with self._sessions() as session:
            flavor = await session.get(NodeFlavor, node.flavor_id)
        if flavor is None:
            problems = [f"node flavor {node.flavor_id} not found"]
        else:
            problems = rules.flavor_mismatches(facts, flavor.spec)
        problem = "; ".join(problems)
        booted = utcnow() - timedelta(seconds=facts.uptime_seconds) if facts.uptime_seconds else None
        await self._update(
            node_id, facts=facts.model_dump(mode="json"), facts_problem=problem[:1024], boot_time=booted
        )
        gpus = f"{facts.gpu_count} GPUs ({facts.gpu_tool})" if facts.gpu_tool else "no GPUs"
        await self._log(
            node_id,
            f"facts: {facts.cpu_cores} CPU cores, {facts.memory_bytes} bytes memory, {gpus}, "
            + ", ".join(f"disk {d.name} {d.size} bytes{' (/)' if d.root else ''}" for d in facts.disks),
        )
        if problem:
            await self._log(node_id, f"flavor mismatch: {problem}", level="WARN")
        return problems

    @activity.defn(name="node.install_addons")
    async def install_addons(self, node_id: str) -> list[str]:
        """Install the template's addons in order, skipping those already installed. Returns the names."""
        details = activity.info().heartbeat_details
        resume_index = int(details[0].get("index", 0)) if details and isinstance(details[0], dict) else 0
        node = await self._begin(node_id, "addons", resume_index)
        async with self._sessions() as session:
            template = await session.get(NodeTemplate, node.template_id)
        if template is None:
            raise _fail(f"node template {node.template_id} not found", "NotFound")
        done = list(node.addons_done) if node.addons_template_id == node.template_id else []
        if node.addons_template_id != node.template_id:
            await self._update(
                node_id, addons_template_id=node.template_id, addons_done=[], addons_installed=False
            )
        addons = list(template.addons)
        if resume_index:
            await self._log(node_id, f"resuming addon installation at #{resume_index + 1}")
        template_cmd = self._settings.node_commands.get("run_addon") or ["sudo", "-n", "bash", "{script}"]
        todo = [(index, name) for index, name in enumerate(addons) if name not in done]
        if todo:
            async with self._ssh(node, keep=False) as conn:
                try:
                    await self._blocking(partial(conn.run, ["mkdir", "-p", ADDON_DIR], timeout=30))
                    for index, name in todo:
                        await self._install_one(conn, node_id, index, addons, template_cmd)
                        done.append(name)
                        await self._update(node_id, addons_done=list(done))
                        await self._log(node_id, f"addon {name} installed")
                except SSHError as err:
                    raise _ssh_failure(err) from err
        else:
            self._pool.discard(await self._target(node))
        await self._update(node_id, addons_installed=True)
        return done

    async def _install_one(
        self, conn: SSHConnection, node_id: str, index: int, addons: list[str], template_cmd: list[str]
    ) -> None:
        name = addons[index]
        step = {"step": rules.STEP_TITLES["addons"], "index": index, "addon": name}
        activity.heartbeat(step)
        script = self._addon_script(name)
        path = f"{ADDON_DIR}/{name}.sh"
        await self._blocking(partial(conn.put, script.encode(), path, mode=0o700))
        await self._log(node_id, f"addon {name} ({index + 1}/{len(addons)}) started")
        try:
            await self._run_logged(
                conn,
                node_id,
                rules.render_command(template_cmd, script=path),
                limit=self._settings.ssh_command_timeout_seconds,
                beat=partial(activity.heartbeat, step),
            )
        except CommandFailed as err:
            message = f"addon {name} failed with exit code {err.exit_code}"
            await self._log(node_id, message, level="ERROR")
            raise _fail(f"{message}: {err.reason}"[:1000], "AddonFailed") from err

    def _addon_script(self, name: str) -> str:
        if rules.addon_name_error(name):
            raise _fail(rules.addon_name_error(name) or name, "AddonFailed")
        override = self._settings.node_addon_dir
        if override is not None and (Path(override) / f"{name}.sh").is_file():
            return addon_catalogue.assemble((Path(override) / f"{name}.sh").read_text(encoding="utf-8"))
        addon = addon_catalogue.get_addon(name)
        if addon is None:
            raise _fail(f"addon {name} is not in the catalogue", "AddonFailed")
        return addon.script

    # --- records (control queue) ------------------------------------------------------------------

    @activity.defn(name="node.finish")
    async def finish(self, params: rules.FinishInput) -> None:
        """Record the outcome of an onboarding pass: phase (and when it changed), message, step cleared."""
        now = utcnow()
        values: dict[str, Any] = {
            "phase": params.phase,
            "message": params.message[:1024],
            "step": "",
            "updated_at": now,
            "phase_changed_at": case((Node.phase != params.phase, now), else_=Node.phase_changed_at),
        }
        if params.phase == rules.READY:
            values["onboarded"] = True
        level = "INFO" if params.phase == rules.READY and not params.message else "ERROR"
        text = f"phase {params.phase}" + (f": {params.message}" if params.message else "")

        async def write(session: AsyncSession) -> None:
            result = await session.execute(update(Node).where(Node.id == params.node_id).values(**values))
            if result.rowcount:  # type: ignore[attr-defined]
                db.add_log(session, node_id=params.node_id, lines=[text], at=now, level=level)

        await self._write(write)

    @activity.defn(name="node.delete")
    async def delete(self, node_id: str) -> bool:
        """Remove the node and its logs (once deletion was requested)."""
        async with self._sessions() as session, session.begin():
            return await db.delete_node(session, node_id=node_id)

    # --- probe ------------------------------------------------------------------------------------

    @activity.defn(name="node.probe_targets")
    async def probe_targets(self, _: None = None) -> list[str]:
        """Ids of the nodes the probe checks: live, not in the middle of an onboarding step."""
        async with self._sessions() as session:
            return [n.id for n in await db.list_nodes(session) if not n.step]

    @activity.defn(name="node.probe")
    async def probe(self, node_id: str) -> rules.ProbeOutcome:
        """Log in and run `true`; move an onboarded node between Ready and SSHFailed, recording why."""
        node = await self._load(node_id)
        reason = ""
        try:
            async with self._ssh(node, reuse=False, keep=False) as conn:
                await self._blocking(
                    lambda: conn.run(["true"], timeout=self._settings.ssh_connect_timeout_seconds)
                )
        except ApplicationError as err:
            reason = err.message
        except SSHError as err:
            reason = err.reason
        reachable = not reason
        return await self._record_probe(node_id, reachable, reason)

    async def _record_probe(self, node_id: str, reachable: bool, reason: str) -> rules.ProbeOutcome:
        node = await self._load(node_id)
        outcome = rules.ProbeOutcome(node_id=node_id, reachable=reachable, phase=node.phase)
        now = utcnow()
        changes: dict[str, Any] = {}
        line, level = "", "INFO"
        if reachable and node.phase == rules.SSH_FAILED and node.onboarded:
            changes = {"phase": rules.READY, "message": "", "phase_changed_at": now}
            line = "probe: reachable again; phase Ready"
        elif reachable and node.phase == rules.SSH_FAILED:
            outcome.restart_onboarding = True
            line = "probe: reachable; retrying onboarding"
        elif not reachable and node.phase == rules.READY:
            changes = {"phase": rules.SSH_FAILED, "message": reason[:1024], "phase_changed_at": now}
            line, level = f"probe: unreachable ({reason}); phase SSHFailed", "ERROR"
        moved = False

        async def write(session: AsyncSession) -> None:
            nonlocal moved
            # only if nothing moved meanwhile: an onboarding step in flight owns the status
            result = await session.execute(
                update(Node)
                .where(
                    Node.id == node_id, Node.phase == node.phase, Node.step == "", Node.deleting_at.is_(None)
                )
                .values(last_probe_at=now, **changes)
            )
            moved = not result.rowcount  # type: ignore[attr-defined]
            if line and not moved:
                db.add_log(session, node_id=node_id, lines=[line], at=now, level=level)

        await self._write(write)
        if moved:
            return rules.ProbeOutcome(node_id=node_id, reachable=reachable, phase=node.phase)
        outcome.changed = bool(changes)
        outcome.phase = changes.get("phase", node.phase)
        return outcome


async def _wait_briefly(job: asyncio.Future[Any], seconds: float) -> bool:
    """Wait up to `seconds` for `job`; True when it finished (its result is read by the caller)."""
    done, _ = await asyncio.wait({job}, timeout=seconds)
    return bool(done)


def _drain(queue: asyncio.Queue[str]) -> list[str]:
    batch = []
    while not queue.empty():
        batch.append(queue.get_nowait())
    return batch
