"""Node activities: the SSH steps of onboarding (ssh queue) and their database records (control queue).

Every step is idempotent: reaching and fact discovery only read, setting the host name is a no-op
when it is already set, and addons already installed for the node's template are skipped (the
database keeps the list; heartbeat details carry the index being worked on).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import faults as fault_db
from db import logs, node_status
from db import nodes as db
from db.encryption import DecryptionError, SecretBox
from db.node_flavors import NodeFlavor
from db.node_templates import NodeTemplate
from db.nodes import Node
from db.secrets import ssh_credentials
from db.session import SessionFactory
from domain import addon_catalogue
from domain import faults as fault_rules
from domain import nodes as rules
from domain import ops_jobs as ops
from domain.config import NodeConfig, Source, current
from domain.errors import PrimusError
from domain.failures import Failure
from domain.logs import LogResource
from domain.nodes import UnavailableReason
from domain.timefmt import utcnow
from drivers.local import LocalConnection
from drivers.ssh import (
    CommandFailed,
    Connection,
    ConnectionPool,
    SSHError,
    SSHTarget,
    Unreachable,
    connect,
)

T = TypeVar("T")
ADDON_DIR = ".primus-safe/addons"
LOG_FLUSH_SECONDS = 0.5
WRITE_ATTEMPTS = 6
POOL_IDLE_SECONDS = 30.0
WRITE_STDIN_THEN_RUN = (
    "sh",
    "-c",
    'mkdir -p "$1" && cat > "$2" && chmod 700 "$2" && shift 2 && exec "$@"',
    "sh",
)
"""argv prefix: `<dir> <file> <command...>` writes stdin to `file` (in `dir`), then runs the command."""


def _fail(message: str, kind: Failure, *, retryable: bool = False) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=not retryable)


def _ssh_failure(err: SSHError) -> ApplicationError:
    """Unreachable hosts are retried (bounded by the retry policy); everything else is final."""
    return _fail(err.reason, Failure(err.kind), retryable=isinstance(err, Unreachable))


class NodeActivities:
    """Holds the database, the secret box, the node config and the thread pool for blocking SSH calls.

    Every status change goes through `db.node_status`; log lines through `db.logs`.
    """

    def __init__(self, sessions: SessionFactory, box: SecretBox, config: Source[NodeConfig]) -> None:
        self._sessions = sessions
        self._box = box
        self._config_source = config
        self._threads = ThreadPoolExecutor(
            max_workers=current(config).ssh.max_parallel, thread_name_prefix="ssh"
        )
        self._pool = ConnectionPool(idle_seconds=POOL_IDLE_SECONDS)

    def _config(self) -> NodeConfig:
        return current(self._config_source)

    @property
    def _connect_timeout(self) -> float:
        return self._config().ssh.connect_timeout_seconds

    # --- helpers ----------------------------------------------------------------------------------

    async def _blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn)

    async def _load(self, node_id: str) -> Node:
        async with self._sessions() as session:
            node = await db.get_node(session, node_id=node_id)
        if node is None:
            raise _fail(f"node {node_id} not found", Failure.NOT_FOUND)
        return node

    async def _target(self, node: Node) -> SSHTarget:
        try:
            async with self._sessions() as session:
                creds = await ssh_credentials(session, self._box, secret_id=node.ssh_secret_id)
        except PrimusError as exc:
            raise _fail(f"ssh secret {node.ssh_secret_id}: {exc.message}", Failure.INVALID) from exc
        except DecryptionError as exc:
            raise _fail(str(exc), Failure.INVALID) from exc
        return SSHTarget(
            host=node.private_ip,
            port=node.port,
            username=creds.username,
            password=creds.password,
            private_key_pem=creds.private_key_pem,
            known_fingerprint=node.host_key_fingerprint or None,
        )

    @contextlib.asynccontextmanager
    async def _ssh(self, node: Node, *, reuse: bool = True, keep: bool = True) -> AsyncIterator[Connection]:
        """A logged-in connection: from the pool when `reuse`, back into it afterwards when `keep`
        (consecutive steps share one login); closed when the block raises. A local node gets the
        local transport (this machine, the worker's user): same steps, no SSH."""
        if node.local:
            with LocalConnection() as local:
                yield local
            return
        target = await self._target(node)
        conn = self._pool.take(target) if reuse else None
        if conn is None:
            try:
                conn = await self._blocking(lambda: connect(target, timeout=self._connect_timeout))
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

    async def _write(self, write: Callable[[AsyncSession], Awaitable[object]]) -> None:
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

    async def _log(self, node_id: str, *lines: str, level: str = "INFO") -> None:
        """Append log lines; a node deleted meanwhile just loses them."""

        async def write(session: AsyncSession) -> None:
            await _append(session, node_id, lines, level=level)

        with contextlib.suppress(logs.OwnerGone):
            await self._write(write)

    async def _log_lines(self, node_id: str, lines: _Lines) -> None:
        """Write (and forget) the waiting lines, each at its own time."""

        async def write(session: AsyncSession) -> None:
            _add_lines(session, node_id, lines)
            await _append(session, node_id, [])

        if lines.items:
            with contextlib.suppress(logs.OwnerGone):
                await self._write(write)
            lines.items.clear()

    async def _begin(self, node_id: str, step: rules.Step, index: int = 0, *, beat: bool = True) -> Node:
        if beat:
            activity.heartbeat({"step": rules.STEP_TITLES[step], "index": index})
        node = await self._load(node_id)

        async def write(session: AsyncSession) -> None:
            if await node_status.begin_step(session, node_id=node_id, step=step, now=utcnow()):
                await _append(session, node_id, [f"step {rules.STEP_TITLES[step]} started"])

        if node.step != step:
            with contextlib.suppress(logs.OwnerGone):
                await self._write(write)
        return node

    async def _run_logged(
        self,
        conn: Connection,
        node_id: str,
        argv: list[str],
        *,
        limit: float,
        beat: Callable[[], None],
        hangup: bool = False,
        pending: _Lines | None = None,
        stdin: bytes = b"",
    ) -> None:
        """Run a command, storing each output line as a node log line while it runs. With
        `pending`, lines waiting there go with the first write, and the output of the last
        moments is left there for the caller's write. With `hangup`, cancelling the activity (a
        stopped job) closes the connection, which ends the remote command (see
        `SSHConnection.run`)."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def on_line(line: str) -> None:
            loop.call_soon_threadsafe(lines.put_nowait, line)

        job = loop.run_in_executor(
            self._threads,
            lambda: conn.run(argv, timeout=limit, on_line=on_line, hangup=hangup, stdin=stdin),
        )
        try:
            while True:
                done = await _wait_briefly(job, LOG_FLUSH_SECONDS)
                batch = _drain(lines)
                if pending is not None:
                    pending.extend(batch)
                    if not done and batch:
                        await self._log_lines(node_id, pending)
                elif batch:
                    await self._log(node_id, *batch)
                if done:
                    break
                beat()
        except asyncio.CancelledError:
            if hangup:
                await self._blocking(conn.close)
                await self._log(node_id, "stopped: the command was hung up", level="ERROR")
            raise
        job.result()

    # --- onboarding steps (ssh queue) -------------------------------------------------------------

    @activity.defn(name="node.prepare")
    async def prepare(self, params: rules.PrepareInput) -> list[str]:
        """Reach the node, set its host name and discover its facts in one pass over one
        connection, from `params.start` (a retry resumes at the step its heartbeat names).

        What the pass found (the trusted host key, the facts, its log lines) is recorded in one
        transaction at its end, which also makes `addons` the node's step; a failing pass records
        its lines before it fails. Returns the flavor mismatches."""
        details = activity.info().heartbeat_details
        start = params.start
        if details and isinstance(details[0], dict) and details[0].get("step") in _PREPARE_BY_TITLE:
            start = max(start, _PREPARE_BY_TITLE[details[0]["step"]], key=rules.PREPARE_STEPS.index)
        steps = rules.PREPARE_STEPS[rules.PREPARE_STEPS.index(start) :]
        node = await self._begin(params.node_id, start, beat=False)  # PrimusPhase names it; a retry redoes it
        lines = _Lines()
        fingerprint = ""
        try:
            async with self._ssh(node, reuse=start != "reach") as conn:
                fingerprint = conn.host_fingerprint
                where = "this machine (local node, no SSH)"
                if not node.local:
                    where = f"{node.private_ip}:{node.port} over SSH"
                lines.add(f"reached {where}")
                if "hostname" in steps and node.hostname:  # (without one the step has nothing to do)
                    activity.heartbeat({"step": rules.STEP_TITLES["hostname"]})
                    await self._hostname_on(conn, node, lines)
                    activity.heartbeat({"step": rules.STEP_TITLES["facts"]})
                try:
                    result = await self._blocking(
                        lambda: conn.run(["sh", "-c", rules.FACTS_SCRIPT], timeout=60)
                    )
                except SSHError as err:
                    raise _ssh_failure(err) from err
        except BaseException:
            with contextlib.suppress(Exception):
                await self._record_pass(node, lines, fingerprint)
            raise
        facts = rules.parse_facts(result.output)
        problems = await self._flavor_problems(node, facts)
        await self._record_prepared(node, lines, fingerprint, facts, problems)
        return problems

    async def _hostname_on(self, conn: Connection, node: Node, lines: _Lines) -> None:
        """The host-name step of a pass: nothing to do without one, else set it when it differs."""
        if not node.hostname:
            return
        template = self._hostname_template(node)
        try:
            current = await self._blocking(lambda: conn.run(["hostname"], timeout=30).output.strip())
            if current == node.hostname:
                lines.add(f"host name is already {node.hostname}")
                return
            argv = rules.render_command(template, hostname=node.hostname)
            output = await self._blocking(lambda: conn.run(argv, timeout=60))
            lines.extend(output.output.splitlines())
        except CommandFailed as err:
            lines.extend(err.output.splitlines())
            lines.add(f"setting the host name failed: {err.reason}", level="ERROR")
            raise _fail(
                f"setting the host name to {node.hostname} failed: {err.reason}", Failure.HOSTNAME_FAILED
            ) from err
        except SSHError as err:
            raise _ssh_failure(err) from err
        lines.add(f"host name set to {node.hostname}")

    def _hostname_template(self, node: Node) -> list[str]:
        """The configured set_hostname command; HostnameFailed for a bad name or none configured."""
        if rules.hostname_error(node.hostname):
            raise _fail(f"invalid host name {node.hostname!r}", Failure.HOSTNAME_FAILED)
        template = self._config().commands.get("set_hostname")
        if not template:
            raise _fail(
                "no set_hostname command is configured (PRIMUS_NODE_COMMANDS)", Failure.HOSTNAME_FAILED
            )
        return list(template)

    async def _flavor_problems(self, node: Node, facts: rules.NodeFacts) -> list[str]:
        async with self._sessions() as session:
            flavor = await session.get(NodeFlavor, node.flavor_id)
        if flavor is None:
            return [f"node flavor {node.flavor_id} not found"]
        return rules.flavor_mismatches(facts, flavor.spec)

    async def _record_pass(self, node: Node, lines: _Lines, fingerprint: str) -> None:
        """What a failing `prepare` pass found: the host key trusted on first use and its lines."""

        async def write(session: AsyncSession) -> None:
            now = utcnow()
            items = list(lines.items)
            first_use = fingerprint and not node.host_key_fingerprint
            if first_use and await node_status.trust_host_key(
                session, node_id=node.id, fingerprint=fingerprint, now=now
            ):
                at = items[0][0] if items else now
                items.insert(0, (at, "INFO", f"trusted host key {fingerprint} on first use"))
            _add_lines(session, node.id, items)
            await _append(session, node.id, [])  # the node must still exist

        if lines.items or (fingerprint and not node.host_key_fingerprint):
            with contextlib.suppress(logs.OwnerGone):
                await self._write(write)

    async def _record_prepared(
        self, node: Node, lines: _Lines, fingerprint: str, facts: rules.NodeFacts, problems: Sequence[str]
    ) -> None:
        """One statement for what a `prepare` pass found (the host key trusted on first use, the
        facts, `addons` as the next step) and one for its lines, each at its own time."""
        problem = "; ".join(problems)
        gpus = f"{facts.gpu_count} GPUs ({facts.gpu_tool})" if facts.gpu_tool else "no GPUs"
        lines.add(
            f"facts: {facts.cpu_cores} CPU cores, {facts.memory_bytes} bytes memory, {gpus}, "
            + ", ".join(f"disk {d.name} {d.size} bytes{' (/)' if d.root else ''}" for d in facts.disks)
        )
        if problem:
            lines.add(f"flavor mismatch: {problem}", level="WARN")
        items = list(lines.items)
        if fingerprint and not node.host_key_fingerprint:
            items.insert(0, (items[0][0], "INFO", f"trusted host key {fingerprint} on first use"))

        async def write(session: AsyncSession) -> None:
            now = utcnow()
            booted = now - timedelta(seconds=facts.uptime_seconds) if facts.uptime_seconds else None
            if await node_status.record_prepared(
                session,
                node_id=node.id,
                fingerprint=fingerprint,
                facts=facts.model_dump(mode="json"),
                problem=problem,
                boot_time=booted,
                now=now,
            ):  # else the node is gone: its lines with it
                await logs.insert_lines(session, resource=LogResource.NODE, resource_id=node.id, lines=items)

        await self._write(write)

    @activity.defn(name="node.reach")
    async def reach(self, node_id: str) -> str:
        """Log in with the node's secret; trusts the host key on first use. Returns the fingerprint."""
        node = await self._begin(node_id, "reach")
        async with self._ssh(node, reuse=False) as conn:
            try:
                await self._blocking(lambda: conn.run(["true"], timeout=self._connect_timeout))
            except SSHError as err:
                raise _ssh_failure(err) from err
        if not node.host_key_fingerprint:

            async def trust(session: AsyncSession) -> None:
                fingerprint = conn.host_fingerprint
                if await node_status.trust_host_key(
                    session, node_id=node_id, fingerprint=fingerprint, now=utcnow()
                ):
                    await _append(session, node_id, [f"trusted host key {fingerprint} on first use"])

            await self._write(trust)
        where = "this machine (local node, no SSH)"
        if not node.local:
            where = f"{node.private_ip}:{node.port} over SSH"
        await self._log(node_id, f"reached {where}")
        return conn.host_fingerprint

    @activity.defn(name="node.set_hostname")
    async def set_hostname(self, node_id: str) -> bool:
        """Set the machine's host name through the command table; False when there was nothing to do."""
        node = await self._begin(node_id, "hostname")
        if not node.hostname:
            return False
        template = self._hostname_template(node)
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
                    f"setting the host name to {node.hostname} failed: {err.reason}", Failure.HOSTNAME_FAILED
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

        async def record(session: AsyncSession) -> None:
            await node_status.record_facts(
                session,
                node_id=node_id,
                facts=facts.model_dump(mode="json"),
                problem=problem,
                boot_time=booted,
                now=utcnow(),
            )

        await self._write(record)
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
        """Install the template's addons in order, skipping those already installed. Returns the names.

        Each addon's progress is one transaction after it ran (its lines, and the addon counted
        as done); a long addon's output is written while it runs."""
        details = activity.info().heartbeat_details
        resume_index = int(details[0].get("index", 0)) if details and isinstance(details[0], dict) else 0
        node = await self._begin(node_id, "addons", resume_index, beat=False)  # each addon beats
        async with self._sessions() as session:
            template = await session.get(NodeTemplate, node.template_id)
        if template is None:
            raise _fail(f"node template {node.template_id} not found", Failure.NOT_FOUND)
        template_id = node.template_id
        switching = node.addons_template_id != template_id
        done = [] if switching else list(node.addons_done)
        addons = list(template.addons)
        lines = _Lines()
        if resume_index:
            lines.add(f"resuming addon installation at #{resume_index + 1}")
        template_cmd = self._config().commands.get("run_addon") or ["sudo", "-n", "bash", "{script}"]
        todo = [(index, name) for index, name in enumerate(addons) if name not in done]

        async def record(session: AsyncSession, *, installed: bool, adopt: bool) -> None:
            if await node_status.record_addons(
                session,
                node_id=node_id,
                template_id=template_id,
                done=done,
                installed=installed,
                now=utcnow(),
                adopt=adopt,
            ):  # else the node is gone, or its template changed (a new pass follows)
                await logs.insert_lines(
                    session, resource=LogResource.NODE, resource_id=node_id, lines=lines.items
                )

        async def save(*, installed: bool) -> None:
            nonlocal switching
            await self._write(partial(record, installed=installed, adopt=switching))
            switching = False
            lines.items.clear()

        if todo:
            async with self._ssh(node, keep=False) as conn:
                try:  # each addon's command makes ADDON_DIR itself
                    for index, name in todo:
                        await self._install_one(conn, node_id, index, addons, list(template_cmd), lines=lines)
                        done.append(name)
                        lines.add(f"addon {name} installed")
                        await save(installed=index == todo[-1][0])
                except SSHError as err:
                    raise _ssh_failure(err) from err
        else:
            if not node.local:
                self._pool.discard(await self._target(node))
            await save(installed=True)
        return done

    async def _install_one(
        self,
        conn: Connection,
        node_id: str,
        index: int,
        addons: list[str],
        template_cmd: list[str],
        *,
        hangup: bool = False,
        lines: _Lines | None = None,
    ) -> None:
        """Copy the addon's script to the node and run it. With `lines`, its lines are left there
        for the caller's next write (output is written meanwhile only while it runs long);
        without, each is written at once."""
        name = addons[index]
        step = {"step": rules.STEP_TITLES["addons"], "index": index, "addon": name}
        activity.heartbeat(step)
        script = self._addon_script(name)
        path = f"{ADDON_DIR}/{name}.sh"
        argv = rules.render_command(template_cmd, script=path)
        stdin = b""
        if hangup:  # a terminal would echo a script sent on stdin: copy it first
            await self._blocking(partial(conn.put, script.encode(), path, mode=0o700))
        else:  # one command writes the script it reads from stdin, then runs it
            argv, stdin = [*WRITE_STDIN_THEN_RUN, ADDON_DIR, path, *argv], script.encode()
        started = f"addon {name} ({index + 1}/{len(addons)}) started"
        if lines is None:
            await self._log(node_id, started)
        else:
            lines.add(started)
        try:
            await self._run_logged(
                conn,
                node_id,
                argv,
                limit=self._config().ssh.command_timeout_seconds,
                beat=partial(activity.heartbeat, step),
                hangup=hangup,
                pending=lines,
                stdin=stdin,
            )
        except CommandFailed as err:
            message = f"addon {name} failed with exit code {err.exit_code}"
            if lines is not None:
                await self._log_lines(node_id, lines)
            await self._log(node_id, message, level="ERROR")
            raise _fail(f"{message}: {err.reason}"[:1000], Failure.ADDON_FAILED) from err

    def _addon_script(self, name: str) -> str:
        if rules.addon_name_error(name):
            raise _fail(rules.addon_name_error(name) or name, Failure.ADDON_FAILED)
        override = self._config().addon_dir
        if override is not None and (Path(override) / f"{name}.sh").is_file():
            return addon_catalogue.assemble((Path(override) / f"{name}.sh").read_text(encoding="utf-8"))
        addon = addon_catalogue.get_addon(name)
        if addon is None:
            raise _fail(f"addon {name} is not in the catalogue", Failure.ADDON_FAILED)
        return addon.script

    # --- ops job steps (ssh queue) ---------------------------------------------------------------

    @activity.defn(name="node.job_addons")
    async def job_addons(self, step: ops.AddonStep) -> str:
        """Run an addon job's addons on the node, in order, each line in the node's log; a failing
        addon fails the step (non-retryable) with its exit code and output."""
        node = await self._load(step.node_id)
        if node.phase != rules.READY or node.step:
            raise _fail(f"the node is not ready (phase {node.phase or 'unknown'})", Failure.INVALID)
        template_cmd = self._config().commands.get("run_addon") or ["sudo", "-n", "bash", "{script}"]
        await self._log(node.id, f"ops job {step.job_id}: addons {', '.join(step.addons)} started")
        async with self._ssh(node, keep=False) as conn:
            try:
                await self._blocking(partial(conn.run, ["mkdir", "-p", ADDON_DIR], timeout=30))
                for index in range(len(step.addons)):
                    await self._install_one(
                        conn, node.id, index, step.addons, list(template_cmd), hangup=True
                    )
            except SSHError as err:
                raise _ssh_failure(err) from err
        await self._log(node.id, f"ops job {step.job_id}: addons done")
        return f"{len(step.addons)} addons installed"

    async def _answers(self, node: Node) -> bool:
        try:
            async with self._ssh(node, reuse=False, keep=False) as conn:
                await self._blocking(lambda: conn.run(["true"], timeout=self._connect_timeout))
        except (ApplicationError, SSHError):
            return False
        return True

    @activity.defn(name="node.job_reboot")
    async def job_reboot(self, step: ops.RebootStep) -> str:
        """Reboot the node (held unavailable meanwhile) and wait until it went away and answers
        again. Heartbeats its stage, so a retry after a worker restart never reboots twice."""
        details = activity.info().heartbeat_details
        stage = str(details[0]) if details else ""
        node = await self._load(step.node_id)
        say = partial(self._log, node.id)
        if not stage:
            await self._write(
                partial(
                    node_status.mark_unavailable,
                    node_id=node.id,
                    reason=UnavailableReason.REBOOT,
                    ref=step.job_id,
                    message=f"rebooting (ops job {step.job_id})",
                    now=utcnow(),
                )
            )
            await say(f"{ops.REBOOT_LOG_PREFIX}requested by ops job {step.job_id}")
            command = self._config().commands.get("reboot") or ["sudo", "-n", "reboot"]
            connected = False
            try:
                async with self._ssh(node, reuse=False, keep=False) as conn:
                    connected = True
                    result = await self._blocking(partial(conn.run, list(command), timeout=30, check=False))
                await say(f"{ops.REBOOT_LOG_PREFIX}command exited {result.exit_code}")
            except (ApplicationError, SSHError) as err:
                reason = err.message if isinstance(err, ApplicationError) else err.reason
                if not connected:  # never reached: nothing was rebooted (retried, then the job fails)
                    await say(f"{ops.REBOOT_LOG_PREFIX}cannot reach the node: {reason}", level="ERROR")
                    await self._release_reboot(node.id, step.job_id)
                    if isinstance(err, ApplicationError):
                        raise
                    raise _ssh_failure(err) from err
                await say(f"{ops.REBOOT_LOG_PREFIX}command sent ({reason})")  # the connection dropping
            stage = "sent"
            activity.heartbeat(stage)
        started = time.monotonic()
        try:
            while True:
                answers = await self._answers(node)
                if stage == "sent" and not answers:
                    stage = "down"
                    await say(f"{ops.REBOOT_LOG_PREFIX}the node went down")
                elif stage == "down" and answers:
                    break
                elapsed = time.monotonic() - started
                if stage == "sent" and elapsed > step.down_grace_seconds:
                    raise _fail(
                        f"the node still answers {step.down_grace_seconds} s after the reboot command",
                        Failure.COMMAND_FAILED,
                    )
                if elapsed > step.wait_seconds:
                    raise _fail(
                        f"the node did not answer within {step.wait_seconds} s of the reboot",
                        Failure.UNREACHABLE,
                    )
                activity.heartbeat(stage)
                await asyncio.sleep(1)
        except ApplicationError as err:
            await say(f"{ops.REBOOT_LOG_PREFIX}{err.message}", level="ERROR")
            await self._release_reboot(node.id, step.job_id)
            raise
        await say(f"{ops.REBOOT_LOG_PREFIX}the node answers again")
        await self._release_reboot(node.id, step.job_id)
        # a probe that ran while it was down left it SSHFailed: it answers, so it is Ready again
        await self._record_probe(node.id, True, "")
        return "rebooted"

    async def _release_reboot(self, node_id: str, job_id: str) -> None:
        await self._write(
            partial(node_status.mark_available, node_id=node_id, reason=UnavailableReason.REBOOT, ref=job_id)
        )

    # --- records (control queue) ------------------------------------------------------------------

    @activity.defn(name="node.finish")
    async def finish(self, params: rules.FinishInput) -> None:
        """Record the outcome of an onboarding pass: phase (and when it changed), message, step cleared."""
        level = "INFO" if params.phase == rules.READY and not params.message else "ERROR"
        text = f"phase {params.phase}" + (f": {params.message}" if params.message else "")

        async def write(session: AsyncSession) -> None:
            now = utcnow()
            if await node_status.finish_onboarding(
                session, node_id=params.node_id, phase=params.phase, message=params.message, now=now
            ):
                line = (now, level, text)
            else:  # joining or leaving a cluster (it keeps that phase), or gone
                node = await session.get(Node, params.node_id)
                if node is None:
                    return
                line = (
                    now,
                    level,
                    f"onboarding ended ({text}); the phase stays {node.phase} while the node joins or "
                    "leaves its cluster",
                )
            await logs.insert_lines(
                session, resource=LogResource.NODE, resource_id=params.node_id, lines=[line]
            )

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
        """Log in and run the health script; move an onboarded node between Ready and SSHFailed,
        and count each check for the probe's faults (SSH unreachable, GPUs, disk)."""
        node = await self._load(node_id)
        reason = output = ""
        addons = await self._checked_addons(node)
        checks: list[tuple[str, int, str]] = []
        try:
            async with self._ssh(node, reuse=False, keep=False) as conn:
                result = await self._blocking(
                    lambda: conn.run(
                        ["sh", "-c", fault_rules.HEALTH_SCRIPT],
                        timeout=self._connect_timeout * 3,
                        check=False,
                    )
                )
                output = result.output
                checks = await self._check_addons(conn, addons)
        except ApplicationError as err:
            reason = err.message
        except SSHError as err:
            reason = err.reason
        reachable = not reason
        extra = (
            {fault_rules.ADDON_CHECK: fault_rules.addon_check_problem(checks)} if reachable and addons else {}
        )
        return await self._record_probe(node_id, reachable, reason, output, extra)

    async def _checked_addons(self, node: Node) -> list[str]:
        """The addons the probe checks: those of the node's template, once they are installed."""
        if not node.onboarded or not node.is_addons_installed:
            return []
        async with self._sessions() as session:
            template = await session.get(NodeTemplate, node.template_id)
        return list(template.addons) if template else []

    async def _check_addons(self, conn: Connection, addons: list[str]) -> list[tuple[str, int, str]]:
        """Run each addon with `check` (nothing changes; exit 3 on drift): (name, code, output)."""
        if not addons:
            return []
        template_cmd = self._config().commands.get("run_addon") or ["sudo", "-n", "bash", "{script}"]
        await self._blocking(partial(conn.run, ["mkdir", "-p", ADDON_DIR], timeout=30))
        results = []
        for name in addons:
            try:
                script = self._addon_script(name)
            except ApplicationError as err:
                results.append((name, 127, err.message))
                continue
            if not addon_catalogue.supports_check(script):
                continue  # it would run for real: only scripts on the shared helpers are checked
            path = f"{ADDON_DIR}/{name}.sh"
            await self._blocking(partial(conn.put, script.encode(), path, mode=0o700))
            argv = [*rules.render_command(list(template_cmd), script=path), "check"]
            result = await self._blocking(partial(conn.run, argv, timeout=60, check=False))
            results.append((name, result.exit_code, result.output))
        return results

    async def _record_probe(
        self,
        node_id: str,
        reachable: bool,
        reason: str,
        output: str = "",
        extra: dict[str, str] | None = None,
    ) -> rules.ProbeOutcome:
        node = await self._load(node_id)
        verdict = rules.probe_verdict(
            phase=node.phase, onboarded=node.onboarded, reachable=reachable, reason=reason
        )
        config = self._config()
        findings: dict[str, str] = {}
        if reachable and node.onboarded and output:  # no health output: only reachability counts
            async with self._sessions() as session:
                flavor = await session.get(NodeFlavor, node.flavor_id)
            findings = fault_rules.health_findings(
                output,
                flavor_gpus=fault_rules.flavor_gpu_count(flavor.spec if flavor else None),
                disk_full_percent=config.disk_full_percent,
            )
            findings |= extra or {}
        health_runs = dict(node.health_runs or {})
        for monitor, problem in findings.items():
            failed, passed = health_runs.get(monitor, [0, 0])
            health_runs[monitor] = [failed + 1, 0] if problem else [0, passed + 1]
        applied = False
        raised: list[str] = []
        cleared: list[str] = []

        async def write(session: AsyncSession) -> None:
            nonlocal applied, raised, cleared
            raised, cleared = [], []  # a retried transaction starts afresh
            now = utcnow()
            runs = await node_status.record_probe(
                session,
                node_id=node_id,
                seen_phase=node.phase,
                reachable=reachable,
                verdict=verdict,
                now=now,
                health_runs=health_runs if findings else None,
            )
            applied = runs is not None
            if runs is None:
                return
            lines = [(verdict.line, verdict.level)] if verdict.line else []
            checks = [(fault_rules.SSH_UNREACHABLE, runs[0], runs[1], reason)]
            checks += [(m, health_runs[m][0], health_runs[m][1], problem) for m, problem in findings.items()]
            for monitor, failures, successes, problem in checks:
                fault = await fault_db.open_fault(session, node_id=node_id, monitor_id=monitor)
                action = fault_rules.probe_fault_action(
                    failures=failures,
                    successes=successes,
                    fault_open=fault is not None,
                    raise_after=config.fault_raise_after,
                    clear_after=config.fault_clear_after,
                )
                if action == "raise":
                    fault_id = str(uuid.uuid4())
                    message = (
                        f"unreachable over SSH in {failures} probes in a row: {problem}"
                        if monitor == fault_rules.SSH_UNREACHABLE
                        else f"{problem} ({failures} probes in a row)"
                    )
                    await fault_db.new_fault(
                        session,
                        fault_id=fault_id,
                        node_id=node_id,
                        monitor_id=monitor,
                        message=message,
                        effect="NoSchedule",
                        cluster_id=node.cluster_id,
                        source="probe",
                        created_by="probe",
                        now=now,
                    )
                    raised.append(fault_id)
                    lines.append(
                        (f"fault {monitor} raised ({fault_id}): {failures} failed probes: {message}", "ERROR")
                    )
                elif action == "clear" and fault is not None:
                    cleared.append(fault.id)
                    lines.append((f"fault {monitor} cleared ({fault.id}): {successes} good probes", "INFO"))
            for line, level in lines:
                logs.add_lines(
                    session, resource=LogResource.NODE, resource_id=node_id, lines=[line], at=now, level=level
                )

        await self._write(write)
        outcome = rules.ProbeOutcome(node_id=node_id, reachable=reachable, phase=node.phase)
        if applied:  # else the node moved meanwhile: its own workflow owns what happens next
            outcome.changed = verdict.phase is not None
            outcome.phase = verdict.phase or node.phase
            outcome.restart_onboarding = verdict.restart_onboarding
            outcome.raised_faults, outcome.cleared_faults = raised, cleared
        return outcome


async def _append(session: AsyncSession, node_id: str, lines: Sequence[str], *, level: str = "INFO") -> None:
    """Add lines to the node's log in the caller's transaction (`logs.OwnerGone` if it was deleted)."""
    await logs.append(
        session, resource=LogResource.NODE, resource_id=node_id, lines=lines, at=utcnow(), level=level
    )


def _add_lines(session: AsyncSession, node_id: str, lines: _Lines | Sequence[_Line]) -> None:
    """Queue lines, each at its own time, in the caller's transaction."""
    for at, level, text in lines.items if isinstance(lines, _Lines) else lines:
        logs.add_lines(
            session, resource=LogResource.NODE, resource_id=node_id, lines=[text], at=at, level=level
        )


async def _wait_briefly(job: asyncio.Future[Any], seconds: float) -> bool:
    """Wait up to `seconds` for `job`; True when it finished (its result is read by the caller)."""
    done, _ = await asyncio.wait({job}, timeout=seconds)
    return bool(done)


def _drain(queue: asyncio.Queue[str]) -> list[str]:
    batch = []
    while not queue.empty():
        batch.append(queue.get_nowait())
    return batch


_PREPARE_BY_TITLE: dict[str, rules.Step] = {rules.STEP_TITLES[step]: step for step in rules.PREPARE_STEPS}


_Line = tuple[datetime, str, str]
"""(when, level, text) of a log line waiting to be written."""


class _Lines:
    """Log lines of a pass, each stamped when it happened, written together at its end."""

    def __init__(self) -> None:
        self.items: list[_Line] = []

    def add(self, text: str, *, level: str = "INFO") -> None:
        self.items.append((utcnow(), level, text))

    def extend(self, texts: Sequence[str], *, level: str = "INFO") -> None:
        for text in texts:
            self.add(text, level=level)
