"""Small helpers for the local services the project starts (broker, metastore, clusters): free loopback
ports and PID bookkeeping. Services are always stopped by the PID they recorded, never by name."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie (no-op for others)."""
    try:
        os.waitpid(pid, 0 if not pid_alive(pid) else os.WNOHANG)
    except ChildProcessError:
        pass
