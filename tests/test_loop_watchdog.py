"""The session's loop watchdog names the blocking call that stalled the event loop."""

from __future__ import annotations

import asyncio
import time

from tests.fixtures.loop_watchdog import LoopWatchdog


def _block_the_loop(seconds: float) -> None:
    time.sleep(seconds)


def test_a_blocking_call_is_recorded_with_its_stack() -> None:
    loop = asyncio.new_event_loop()
    watchdog = LoopWatchdog(loop, threshold=0.5, interval=0.05)

    async def scenario() -> None:
        await asyncio.sleep(0.3)  # ticks run: nothing to report
        _block_the_loop(1.2)
        await asyncio.sleep(0.3)

    try:
        watchdog.start()
        loop.run_until_complete(scenario())
    finally:
        watchdog.stop()
        loop.close()
    assert len(watchdog.stalls) == 1, watchdog.stalls
    stall = watchdog.stalls[0]
    assert "_block_the_loop" in stall.stack and "time.sleep(seconds)" in stall.stack
    assert stall.seconds >= 1.0  # the whole blocked stretch, not just the threshold
