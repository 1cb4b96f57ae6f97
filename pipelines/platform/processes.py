"""Small helpers for the local services the project starts (broker, metastore, clusters): free loopback
ports, PID bookkeeping, and signals held while a service is launched and recorded. Services are always
stopped by the PID they recorded, never by name."""

from __future__ import annotations

import os
import signal
import socket
import threading
from contextlib import ExitStack
from pathlib import Path
from types import FrameType


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all bound at once, so never the same one twice)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def pid_alive(pid: int) -> bool:
    """True while the process or any of its threads still runs.

    A zombie still answers kill(0): it counts as gone once *all* its threads have exited (a JVM's
    main thread can turn zombie while its other threads are still shutting down and holding ports).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone meanwhile; without /proc, trust kill(0)
    except OSError:
        return True
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                if stat.read().rpartition(")")[2].split()[0] not in ("Z", "X"):
                    return True
        except OSError:
            continue  # that thread just exited
    return False


def cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None where /proc is not available."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        return [] if Path("/proc/self/cmdline").exists() else None
    except OSError:
        return None


def reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie (no-op for others)."""
    try:
        os.waitpid(pid, 0 if not pid_alive(pid) else os.WNOHANG)
    except ChildProcessError:
        pass


class HeldSignals:
    """Ctrl-C and SIGTERM held back from the moment it is made until ``release``, then delivered.

    Starting a service is two steps - launch the process, record its PID - and an interrupt between them (or
    between recording it and entering the ``try`` that stops it on the way out) would leave a process nobody
    stops. Held, a signal that arrives meanwhile is only noted; ``release`` puts the caller's handlers back and
    raises it again, so it lands where the caller can clean up. Handlers are Python's, which ``exec`` resets:
    the launched process gets the default ones. Outside the main thread (where Python delivers no signal to
    the code), or where a handler was set outside Python (it could not be put back), it holds nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.previous: dict[int, signal.Handlers | object] = {}
        restorable = all(signal.getsignal(sig) is not None for sig in self.SIGNALS)  # None: set outside Python
        if threading.current_thread() is threading.main_thread() and restorable:
            self.previous = {sig: signal.signal(sig, self._note) for sig in self.SIGNALS}

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        self.pending.append(signum)

    def release(self) -> None:
        """Restore the caller's handlers, then deliver what arrived meanwhile (idempotent)."""
        previous, self.previous = self.previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        pending, self.pending = self.pending, []
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)
