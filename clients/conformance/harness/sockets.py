"""Which TCP connections a process holds, read from /proc (no ss or netstat needed): how the
stop scenario sees, from the server's side, that a client's connection is gone."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: /proc/net/tcp's state numbers (include/net/tcp_states.h).
STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}


@dataclass(frozen=True)
class Connection:
    local_port: int
    remote_port: int
    state: str


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(fd_dir)
    except FileNotFoundError:
        return set()  # the process is gone
    for name in names:
        try:
            target = os.readlink(fd_dir / name)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def tcp_connections(pid: int) -> list[Connection]:
    """The TCP sockets (IPv4 and IPv6) that process ``pid`` has open, but listening ones."""
    inodes = _socket_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            state = STATES.get(int(fields[3], 16), fields[3])
            if int(fields[9]) in inodes and state != "LISTEN":
                found.append(Connection(_port(fields[1]), _port(fields[2]), state))
    return found
