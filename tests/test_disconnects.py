"""converter.server.disconnects: callbacks fired once, and the cancel they make ends quietly while any
other cancel goes through (the real protocol and server: tests/integration/test_modern_cancel.py)."""

from __future__ import annotations

import asyncio

import pytest

from converter.server.disconnects import Disconnect, cancelled_at, of


def test_callbacks_run_once_and_a_removed_one_not_at_all() -> None:
    gone, ran = Disconnect(), []
    gone.add(lambda: ran.append("a"))
    remove = gone.add(lambda: ran.append("b"))
    remove()
    gone.fire()
    gone.fire()
    assert ran == ["a"] and gone.fired
    assert of({"openapi_mcp.disconnect": gone}) is gone and of({}) is None


def test_the_disconnect_cancels_the_work_and_ends_quietly() -> None:
    async def main() -> str:
        gone, reached = Disconnect(), asyncio.Event()

        async def work() -> None:
            reached.set()
            await asyncio.sleep(30)

        async def client_goes() -> None:
            await reached.wait()
            gone.fire()

        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(client_goes()))
        await cancelled_at(gone, work())
        await asyncio.sleep(0)  # the task is not left cancelled: it goes on
        return "went on"

    assert asyncio.run(main()) == "went on"


def test_any_other_cancel_goes_through() -> None:
    async def main() -> None:
        gone = Disconnect()
        task = asyncio.ensure_future(cancelled_at(gone, asyncio.sleep(30)))
        await asyncio.sleep(0)
        task.cancel()  # a shutdown, not the client
        with pytest.raises(asyncio.CancelledError):
            await task
        gone.fire()  # too late: nothing is registered any more

    asyncio.run(main())
