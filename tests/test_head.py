"""vocabscale.cluster.head: Snakemake's SIGTERM handler, where it cannot hang the head process.

Snakemake's own handler (`JobScheduler.exit_gracefully`) run on the state it touches, with the
main thread holding the scheduler's lock when SIGTERM arrives, as it does while it handles a
finished or failed job: as it is, the process hangs; deferred, it exits, the flag set. The
SLURM tests (test_slurm.py) send the signal to a real head process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from vocabscale.cluster.head import defer_graceful_exit

SCHEDULER_UNDER_SIGTERM = """
import signal, sys, threading
from snakemake.scheduling.job_scheduler import JobScheduler
from vocabscale.cluster.head import defer_graceful_exit

if sys.argv[1] == "deferred":
    defer_graceful_exit()


class Scheduler:
    '''What JobScheduler's SIGTERM handler touches, and the handler itself.'''

    exit_gracefully = JobScheduler.exit_gracefully

    def __init__(self):
        self._lock = threading.Lock()
        self._open_jobs = threading.Semaphore(0)
        self._user_kill = None


scheduler = Scheduler()
signal.signal(signal.SIGTERM, scheduler.exit_gracefully)  # as JobScheduler.__init__ does
with scheduler._lock:  # the scheduler handling a finished job
    print("SIGTERM", flush=True)
    signal.raise_signal(signal.SIGTERM)  # the handler runs here, in the main thread
    seen = scheduler._user_kill  # what the scheduler reads next, under its lock
scheduler._open_jobs.acquire()  # the scheduler waits for work; the handler wakes it
print(seen, scheduler._user_kill)
"""


def run_scheduler(mode: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCHEDULER_UNDER_SIGTERM, mode],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_snakemakes_own_handler_hangs_while_the_scheduler_holds_its_lock():
    """The cause of the hang, on Snakemake's code as installed (a failure here means the
    release in use no longer hangs: vocabscale.cluster.head may then be dropped)."""
    with pytest.raises(subprocess.TimeoutExpired) as hung:
        run_scheduler("as-is", timeout=10)
    assert "SIGTERM" in str(hung.value.stdout), "it hung before the signal"


def test_the_deferred_handler_sets_the_flag_at_once_and_wakes_the_scheduler():
    result = run_scheduler("deferred", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SIGTERM", "graceful", "graceful"]


def test_deferring_twice_changes_nothing_more():
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert defer_graceful_exit()
    deferred = JobScheduler.exit_gracefully
    assert defer_graceful_exit()
    assert JobScheduler.exit_gracefully is deferred
