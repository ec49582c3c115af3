"""systemd's readiness protocol (sd_notify): `Type=notify` units learn that the
supervisor serves once it says READY=1 on the datagram socket named by
$NOTIFY_SOCKET ('@' starts a name in the abstract namespace). Without that variable
it does nothing, so `serve` works the same outside systemd."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send state ("READY=1", "STOPPING=1", "STATUS=...", newline-separated) to the
    service manager; False if there is none. A failure is logged, never raised:
    the broker serves either way."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not tell systemd %r on %s: %s", state, address, exc)
        return False
    return True
