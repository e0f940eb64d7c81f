"""Living beside pytest-embedded: its per-session multiprocessing manager must not outlive pytest.

pytest-embedded starts a `MessageQueueManager` server process in every session (an autouse fixture). When
pytest is killed with SIGKILL (a CI job's timeout, the OOM killer) nothing shuts it down, and the process
lives on, orphaned. `manager_dies_with_pytest` makes that server ask the kernel (Linux `PR_SET_PDEATHSIG`) to
terminate it when the process that started it ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """In a child process: be sent SIGTERM when the parent dies (and exit now if it already has)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        return  # not permitted here: nothing better to do than what pytest-embedded does without it
    if os.getppid() != parent_pid:  # the parent died between fork and prctl
        os._exit(0)


def manager_dies_with_pytest() -> bool:
    """Start pytest-embedded's manager with `die_with_parent`; False where that cannot apply (no Linux, no plugin)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        from pytest_embedded.log import MessageQueueManager
    except ImportError:
        return False
    start = MessageQueueManager.start
    if getattr(start, "dies_with_pytest", False):
        return True

    def start_dying_with_parent(self, initializer=None, initargs=()):  # type: ignore[no-untyped-def]
        if initializer is not None:  # someone else's initializer: leave it alone
            return start(self, initializer, initargs)
        return start(self, die_with_parent, (os.getpid(),))

    start_dying_with_parent.dies_with_pytest = True  # type: ignore[attr-defined]
    MessageQueueManager.start = start_dying_with_parent  # type: ignore[method-assign]
    return True
