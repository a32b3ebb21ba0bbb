"""Ctrl-C for the command line: one line, status 130, no traceback, no worker left behind, promptly.

The main thread sees Ctrl-C as a ``KeyboardInterrupt`` (Python's default handler), which unwinds
the work with its ``finally`` blocks (process pools terminated, Dask clients closed) and reaches
:func:`bayeslmm.cli.main`, which calls :func:`report` (the command line exits there, without
unwinding what the interrupt left half done). Native code that does not return to the
interpreter (a JAX sampler, a wait on a remote scheduler) would delay that without limit, so
:func:`install` also has the C-level signal handler write to a socket (``signal.set_wakeup_fd``)
that a watcher thread reads: if the process still runs :data:`GRACE_S` seconds after the first
Ctrl-C, or at the second one, the watcher reports the interrupt, ends the child processes and
exits with status 130 itself.

A ``KeyboardInterrupt`` raised where Python cannot propagate it (a ctypes callback, such as
llvmlite's while Numba compiles, or a ``__del__``) would be printed as "Exception ignored" with a
traceback and lost: :func:`_unraisable_hook` silences it and delivers the interrupt again
(``_thread.interrupt_main``), so that it is raised in ordinary code a moment later.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

#: exit status after Ctrl-C (128 + SIGINT, the shell convention)
EXIT_INTERRUPTED = 130
MESSAGE = "bayeslmm: interrupted"
#: seconds the main thread has to unwind after Ctrl-C before the watcher exits the process itself
GRACE_S = 1.5
#: the warning filter handed to multiprocessing's resource tracker (see :func:`install`)
TRACKER_FILTER = "ignore:resource_tracker:UserWarning"


class Interrupted(BaseException):
    """Ctrl-C where ``KeyboardInterrupt`` would be caught and ignored: PyMC's and nutpie's samplers
    catch it, end the current chain, go on with the next one and return the draws as if complete.
    Callers turn it back into ``KeyboardInterrupt``."""


_lock = threading.Lock()
_reported = False
_installed_pid: int | None = None
_sockets: list[socket.socket] = []  # the wakeup socket pair, kept open for the life of the process


def _resource_tracker_pid() -> int | None:
    """multiprocessing's resource tracker: it ignores SIGTERM and, once this process is gone, frees
    the semaphores it tracks and exits; killing it would leak them."""
    rt = sys.modules.get("multiprocessing.resource_tracker")
    tracker = getattr(rt, "_resource_tracker", None)
    return getattr(tracker, "_pid", None)


def kill_children(timeout: float = 1.0) -> None:
    """Terminate this process's child processes (recursively), then kill those still alive after ``timeout``.

    The resource tracker of ``multiprocessing`` is left to exit by itself when this process does.
    """
    keep = _resource_tracker_pid()
    try:
        import psutil

        procs = [p for p in psutil.Process().children(recursive=True) if p.pid != keep]
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=timeout)
        return
    except ImportError:
        pass
    import multiprocessing

    kids = [p for p in multiprocessing.active_children() if p.pid != keep]
    for p in kids:
        p.terminate()
    deadline = time.monotonic() + timeout
    for p in kids:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()


def report() -> int:
    """Print :data:`MESSAGE` once (whichever thread comes first), end the children; :data:`EXIT_INTERRUPTED`."""
    global _reported
    if _installed_pid == os.getpid() and threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):  # a second Ctrl-C must not interrupt the report
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    with _lock:
        first = not _reported
        _reported = True
    if first:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        try:
            print(MESSAGE, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
    kill_children()
    if _installed_pid == os.getpid():
        # the command line: exit now. Unwinding further would free what the interrupted code left
        # half built (an LLVM module Numba was compiling), whose finalisers may crash
        os._exit(EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED


def _hard_exit() -> None:
    report()
    os._exit(EXIT_INTERRUPTED)  # report() exits already where install() ran; this is for safety


def _watch(sock: socket.socket, grace: float) -> None:
    deadline: float | None = None
    while True:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _hard_exit()
            sock.settimeout(remaining)
        try:
            data = sock.recv(64)
        except TimeoutError:
            _hard_exit()
        except OSError:
            return
        if not data:
            return
        if os.getpid() != _installed_pid:  # a forked child inherited the socket: not ours to act on
            return
        for signum in data:
            if signum != signal.SIGINT:
                continue
            if deadline is not None:  # a second Ctrl-C: stop now
                _hard_exit()
            deadline = time.monotonic() + grace


#: seconds after an interrupt swallowed in a callback before it is delivered again
REDELIVER_S = 0.05


def _unraisable_hook(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, (KeyboardInterrupt, Interrupted)):
            # swallowed in a callback: deliver it again a moment later, from another thread (from this
            # one, the handler would run at once, inside this hook, and be swallowed again)
            timer = threading.Timer(REDELIVER_S, _thread.interrupt_main, args=(signal.SIGINT,))
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    return hook


@contextlib.contextmanager
def sigint_guard(make_exc: Callable[[], BaseException]) -> Iterator[dict[str, bool]]:
    """Ctrl-C raises ``make_exc()`` in the main thread for the duration; yields ``{"hit": bool}``.

    Outside the main thread, or where SIGINT is ignored or left to the operating system, nothing
    is installed (``hit`` stays False).
    """
    state = {"hit": False}
    prev = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(prev):
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        state["hit"] = True
        raise make_exc()

    prev_hook = sys.unraisablehook
    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = _unraisable_hook(prev_hook)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, prev)
        sys.unraisablehook = prev_hook


_fork_masks = threading.local()


def _block_for_fork() -> None:
    """Before ``os.fork``: SIGINT blocked in the forking thread, so the child starts with it blocked."""
    _fork_masks.old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _unblock_after_fork() -> None:
    old = getattr(_fork_masks, "old", None)
    if old is not None:
        _fork_masks.old = None
        signal.pthread_sigmask(signal.SIG_SETMASK, old)  # a Ctrl-C meanwhile is delivered now


def _reset_in_child() -> None:
    """A forked worker (PyMC's chains, the bootstrap pool) keeps SIGINT blocked: Ctrl-C in a terminal
    reaches the whole process group, and the parent, not the worker, handles it (and ends the
    workers). It must not write its signals to the parent's wakeup socket either."""
    _fork_masks.old = None
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass


def ignoring_sigint() -> contextlib.AbstractContextManager[None]:
    """SIGINT ignored for the duration (main thread only): processes spawned meanwhile inherit that
    (``exec`` keeps an ignored signal ignored, and Python leaves it so), so Ctrl-C in a terminal
    does not make them print a traceback; their parent stops them. A Ctrl-C meanwhile is lost."""
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    return _ignoring()


@contextlib.contextmanager
def _ignoring() -> Iterator[None]:
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def install(grace: float = GRACE_S) -> bool:
    """Start the watcher thread (main thread only; not where SIGINT is ignored). True if installed.

    Also: processes forked from now on start with SIGINT blocked (see :func:`_reset_in_child`).
    """
    global _installed_pid
    if _installed_pid == os.getpid():
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False  # ignored (a background job) or someone else's handler: leave it alone
    r, w = socket.socketpair()
    w.setblocking(False)
    try:
        signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        r.close()
        w.close()
        return False
    _installed_pid = os.getpid()
    _sockets[:] = [r, w]
    sys.unraisablehook = _unraisable_hook(sys.unraisablehook)
    # after Ctrl-C the command exits without running finalisers, so multiprocessing's resource
    # tracker (started later, with this process's -W options) frees a worker pool's semaphores
    # itself; its warning that they "leaked" would be a second line after "bayeslmm: interrupted"
    if TRACKER_FILTER not in sys.warnoptions:
        sys.warnoptions.append(TRACKER_FILTER)
    if hasattr(signal, "pthread_sigmask"):
        os.register_at_fork(before=_block_for_fork, after_in_parent=_unblock_after_fork, after_in_child=_reset_in_child)
    else:
        os.register_at_fork(after_in_child=_reset_in_child)
    threading.Thread(target=_watch, args=(r, grace), name="bayeslmm-interrupt", daemon=True).start()
    return True
