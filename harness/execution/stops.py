"""How the harness stops: the signals that stop it (Ctrl-C, a scheduler's SIGTERM), the threads
it starts, which never take them, and the wait in which a sweep's main thread heeds them."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import Future, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterator

# The signals that stop the harness: Ctrl-C, and a scheduler's SIGTERM. CPython runs handlers in
# the main thread only, and notices one that another thread took only when the main thread next
# runs Python: no thread of the harness's takes them, and a sweep's main thread waits in
# heeding_stops(), which sees them wherever they landed. (A harness started with SIGINT ignored
# keeps it ignored, as a shell's background job wants.) A thread's mask is what the threads and
# processes it starts inherit, so a worker is given them back (stop_signals(blocked=False)).
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def stop_signals(blocked: bool) -> Iterator[None]:
    """This thread's stop signals blocked (or unblocked) for the block's duration."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK if blocked else signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def start_thread(target: Callable[..., object], *args: object) -> threading.Thread:
    """A daemon thread that never takes a stop signal (:data:`STOP_SIGNALS`)."""
    thread = threading.Thread(target=target, args=args, daemon=True)
    with stop_signals(blocked=True):
        thread.start()
    return thread


@contextmanager
def heeding_stops(interval: float = 0.25) -> Iterator[Callable[[list[Future[Any]]], object]]:
    """For the block, a stop signal that any thread takes runs its handler in the main thread
    within ``interval`` s, while it is in the wait this yields. CPython's C handler writes each
    signal's number to the wake-up fd in whichever thread took it; the wait reads them and raises
    each again to itself, where the handler runs at once (one call), without waiting for the
    main thread to notice one that landed elsewhere. Set before the block starts its threads, it misses none."""
    if threading.current_thread() is not threading.main_thread():
        yield wait  # only the main thread has a wake-up fd, and runs handlers
        return
    read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wait_for(futures: list[Future[Any]]) -> None:
        while wait(futures, timeout=interval).not_done:
            try:
                taken = set(os.read(read, 512))
            except BlockingIOError:
                continue
            for signum in sorted(taken & {int(s) for s in STOP_SIGNALS}):
                signal.raise_signal(signum)

    previous = -1  # a handler may raise between any two steps: the fd is unset all the same
    try:
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        yield wait_for
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
