"""Waiting for a condition, never for a fixed time.

The synchronous twin is :func:`experiments.demo.wait_for` (the tests that drive processes from
plain functions use it); :func:`wait_until` is for coroutines, which must keep the event loop
running (a websockets server or reader in the same loop) while they wait.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> Any:
    """Poll ``predicate()`` (a function or a coroutine function) until it returns a truthy value
    and return that value; fail the test, naming ``what``, once ``timeout`` seconds have passed.
    Between polls the event loop runs other tasks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)
