"""Reading a pod's output files as `scripts.COLLECT` sends them.

Each line of `stdout.log` / `stderr.log` is `<unix seconds> <text>` (see `supervisor`). A chunk
is the bytes after a byte offset, base64 so any bytes survive the transport; only whole lines
are taken (the stampers always end a line, so what is left is a line still being written), and
the position moves past them.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from domain.pod_output import OutputBatch, OutputLine, OutputPosition, from_epoch
from domain.timefmt import utcnow


@dataclass
class Chunk:
    """What `COLLECT` sent for one stream."""

    pod: str
    stream: str
    offset: int
    size: int
    dispatch: str
    data: bytes

    def batch(self, node: str, container: str, position: OutputPosition) -> OutputBatch:
        """The whole lines of the chunk, numbered after `position`."""
        cut = self.data.rfind(b"\n") + 1
        lines: list[OutputLine] = []
        last: datetime | None = None
        for raw in self.data[:cut].split(b"\n")[:-1]:
            stamp, _, text = raw.decode(errors="replace").partition(" ")
            at = from_epoch(stamp)
            if at is None:  # not written by a stamper: keep the whole line, with the last time seen
                at, text = last or utcnow(), raw.decode(errors="replace")
            last = at
            lines.append(OutputLine(at=at, text=text))
        after = OutputPosition(seq=position.seq + len(lines), offset=self.offset + cut)
        return OutputBatch(
            pod=self.pod,
            node=node,
            container=container,
            stream=self.stream,
            position=OutputPosition(seq=position.seq, offset=self.offset),
            after=after,
            lines=lines,
            more=after.offset < self.size,
        )


def parse_collect_output(out: str) -> list[Chunk]:
    """The chunks of one `COLLECT` run (anything else it printed is skipped)."""
    chunks: list[Chunk] = []
    header: list[str] | None = None
    body: list[str] = []
    for line in out.splitlines():
        if header is None:
            fields = line.split(" ")
            if len(fields) in (5, 6) and fields[0] == "@" and fields[3].isdigit() and fields[4].isdigit():
                header, body = fields, []
            continue
        if line != ".":
            body.append(line)
            continue
        try:
            data = base64.b64decode("".join(body), validate=True)
        except (binascii.Error, ValueError):
            data = b""
        chunks.append(
            Chunk(
                pod=header[1],
                stream=header[2],
                offset=int(header[3]),
                size=int(header[4]),
                dispatch=header[5] if len(header) > 5 else "",
                data=data,
            )
        )
        header = None
    return chunks
