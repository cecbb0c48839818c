"""Free loopback ports for processes a test starts."""

import socket
from contextlib import ExitStack

_handed_out: set[int] = set()


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports, none handed out before in this process.

    All ``n`` sockets stay bound until every port is chosen, so the kernel cannot hand the
    same ephemeral port out twice (binding one socket at a time and closing it can)."""
    ports: list[int] = []
    with ExitStack() as stack:
        while len(ports) < n:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in _handed_out:
                ports.append(port)
                _handed_out.add(port)
    return ports
