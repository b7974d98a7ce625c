"""The event loop implementation: uvloop when installed (the ``[speed]`` extra), else asyncio's.

uvloop runs the same code with a faster transport layer (fewer Python frames per read and
write); ``EVQUEUE_LOOP=asyncio`` in the environment forces the standard loop.
"""

from __future__ import annotations

import asyncio
import os

try:
    import uvloop
except ImportError:  # the [speed] extra is optional
    uvloop = None

__all__ = ["event_loop_name", "new_event_loop"]


def _use_uvloop() -> bool:
    return uvloop is not None and os.environ.get("EVQUEUE_LOOP", "") != "asyncio"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the chosen implementation."""
    return uvloop.new_event_loop() if _use_uvloop() else asyncio.new_event_loop()


def event_loop_name() -> str:
    """``uvloop`` or ``asyncio``: what ``new_event_loop`` returns, for logs and benchmarks."""
    return "uvloop" if _use_uvloop() else "asyncio"
