"""How the demo server protects itself from slow and greedy clients (kept free of heavy imports for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

READ_TIMEOUT_S = 5.0  # a body slower than this is cut off (408): an idle or trickling client holds nothing long
MAX_UPLOADS = 256  # plain-API bodies being read at once; each costs at most MAX_FILE_BYTES


@dataclass(frozen=True)
class Limits:
    """Requests classified or waiting at once (``queue_size``: more get 503), the deadline for a plain-API body to
    arrive, and how many bodies may be read at once."""

    queue_size: int = 64
    read_timeout: float = READ_TIMEOUT_S
    max_uploads: int = MAX_UPLOADS
