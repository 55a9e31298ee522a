"""How the demo server protects itself from slow and greedy clients (kept free of heavy imports for the CLI)."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

READ_TIMEOUT_S = 5.0  # a request head or body slower than this is cut off: idle or trickling clients hold nothing
MAX_UPLOADS = 256  # plain-API bodies being read at once; each costs at most MAX_FILE_BYTES
MAX_CONNECTIONS = 512  # open connections, unless the open-file limit is lower (default_max_connections)
RETRY_AFTER_S = 10  # what a request for a runtime still being built is told to wait


def default_max_connections() -> int:
    """MAX_CONNECTIONS, or half the process's open-file limit if that is less: the other half stays for the model
    files, runtimes and the server itself, so a flood of connections cannot make ``accept`` fail."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(1, min(MAX_CONNECTIONS, soft // 2))


@dataclass(frozen=True)
class Limits:
    """Requests classified or waiting at once (``queue_size``: more get 503), the deadline for a request head (any
    connection) and for a plain-API body to arrive, how many bodies may be read at once, and how many connections
    may be open (at the limit, the oldest one still waiting for its request head is closed)."""

    queue_size: int = 64
    read_timeout: float = READ_TIMEOUT_S
    max_uploads: int = MAX_UPLOADS
    max_connections: int = field(default_factory=default_max_connections)


class NotReady(Exception):
    """A runtime still being built in the background: answered 503 with Retry-After, never a minutes-long wait."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after
