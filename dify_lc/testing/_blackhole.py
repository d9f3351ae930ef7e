"""`BlackHole`: a loopback address whose TCP connect never completes (a connect timeout).

A listening socket that never accepts, with its accept queue filled by our own connections:
Linux then drops every further SYN, so a client's `connect()` neither succeeds nor is refused
and waits for its connect timeout. Linux only (other kernels may refuse or answer instead).
"""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Self

from ._server import _check_loopback

__all__ = ["BlackHole"]

# Enough for any backlog rounding; Linux needs one connection for `listen(0)`.
_MAX_FILLERS = 16
# A loopback handshake completes in microseconds while the queue has room.
_PROBE_TIMEOUT = 0.2


class BlackHole:
    """A loopback port where connections hang in `connect()` until the client gives up::

        with BlackHole() as hole:
            ChatDify(base_url=hole.base_url, connect_timeout=0.2, ...)  # APITimeoutError

    `start()` raises `RuntimeError` when the kernel does not drop SYNs on a full queue.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        _check_loopback(host)
        self.host = host
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []

    @property
    def port(self) -> int:
        """The bound port."""
        if self._listener is None:
            raise RuntimeError("black hole not started")
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        """`http://host:port`, without the API prefix."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """A base URL clients can be configured with: `http://host:port/v1`."""
        return f"{self.url}/v1"

    def start(self) -> Self:
        """Listen, then connect until the accept queue is full (a connect no longer completes)."""
        if self._listener is not None:
            raise RuntimeError("black hole already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.bind((self.host, 0))
            self._listener.listen(0)
            address = self._listener.getsockname()
            for _ in range(_MAX_FILLERS):
                client = socket.socket(family, socket.SOCK_STREAM)
                client.settimeout(_PROBE_TIMEOUT)
                try:
                    client.connect(address)
                except TimeoutError:  # the SYN was dropped: the queue is full
                    client.close()
                    return self
                except BaseException:
                    client.close()
                    raise
                self._fillers.append(client)
            raise RuntimeError("the kernel accepts connections beyond the listen backlog")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the listener and the connections that fill its queue."""
        for sock in self._fillers:
            sock.close()
        self._fillers.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
