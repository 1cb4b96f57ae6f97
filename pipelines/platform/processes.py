"""Small helpers for the local services the project starts (broker, metastore, clusters): free loopback
ports and PID bookkeeping. Services are always stopped by the PID they recorded, never by name."""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack
from pathlib import Path


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
