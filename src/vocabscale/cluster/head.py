"""The head process (`snakemake --profile cluster`): SIGTERM without the deadlock.

Snakemake answers SIGTERM with `JobScheduler.exit_gracefully` ("exit once the running jobs have
finished"), which takes the scheduler's lock. Python runs a signal handler in the main thread,
between two bytecodes of whatever that thread was doing; when it was the scheduler itself,
holding that lock to handle a finished or failed job (`_finish_jobs`, `_error_jobs`), the
handler waits forever for a lock its own thread holds, the executor's status thread waits
behind it, and only SIGKILL ends the process (Snakemake 9.27.1, the latest release, and every
version with this handler). `defer_graceful_exit`, called by the Snakefile, makes the handler
set the flag Snakemake's sets and hand the scheduler to a thread of its own, which calls
Snakemake's handler there: it waits for the lock like any other thread, and SIGTERM keeps its
meaning.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

#: Schedulers that received SIGTERM, put by the signal handler: SimpleQueue.put is reentrant
#: (it takes no lock the interrupted thread could hold), so it is safe in a signal handler.
_requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
_DEFERRED = "_vocabscale_deferred"


def _scheduler_class() -> type | None:
    """Snakemake's JobScheduler (its module moved in Snakemake 9), None if not found."""
    try:
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        try:
            from snakemake.scheduler import JobScheduler  # Snakemake 8
        except ImportError:
            return None
    return JobScheduler


def _serve(handler: Callable[..., Any]) -> None:
    """Run Snakemake's SIGTERM handler for each scheduler the signal handler hands over."""
    while True:
        handler(_requests.get())


def defer_graceful_exit() -> bool:
    """Make Snakemake's SIGTERM handler run in a thread of its own instead of inside the signal
    handler; True where it now does (also when done before), False where Snakemake has no such
    handler (nothing is changed then)."""
    scheduler = _scheduler_class()
    handler = getattr(scheduler, "exit_gracefully", None)
    if handler is None:
        return False
    if getattr(handler, _DEFERRED, False):
        return True
    threading.Thread(target=_serve, args=(handler,), name="vocabscale-sigterm", daemon=True).start()

    def exit_gracefully(self: Any, *args: Any) -> None:
        # what Snakemake's handler sets, read by the scheduler under its lock on each round: a
        # round the signal interrupts before that read submits nothing (one attribute store
        # needs no lock)
        self._user_kill = "graceful"
        _requests.put(self)  # the thread sets it again under the lock and wakes the scheduler

    setattr(exit_gracefully, _DEFERRED, True)
    scheduler.exit_gracefully = exit_gracefully  # type: ignore[union-attr]
    return True
