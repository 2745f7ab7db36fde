"""What the decoy lets one request (and all of them together) cost: body bytes per route, JSON elements,
request-body memory in flight, and disk for uploads. Past a cap the decoy answers with the text Ollama
itself gives in that situation (its MaxBytesReader's, or a full disk's), never with a tell-tale of its own.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ollama_guard.decoy.bodies import TOO_LARGE_TEXT, BadRequest, too_large

__all__ = ["TOO_LARGE_TEXT", "BodyBudget", "DiskQuota", "body_limit", "too_large"]

# Ollama caps a (decompressed) body at 20 MiB where it caps one at all (middleware/openai.go and
# server/cloud_proxy.go: maxDecompressedBodySize); everywhere else Go reads what it is sent. The decoy
# keeps Ollama's figure where Ollama has one and 8 MiB for other JSON routes (the largest body Python's
# parser turns into objects in well under the 500 ms other clients may wait).
OLLAMA_MAX_DECOMPRESSED = 20 << 20
JSON_BODY_LIMIT = 8 << 20
ROUTE_BODY_LIMITS = {"/v1/responses": OLLAMA_MAX_DECOMPRESSED}
BODY_MEMORY_BUDGET = 96 << 20  # request bodies held in memory across all connections
DEFAULT_UPLOAD_QUOTA = 2 << 30
FILE_OVERHEAD = 16 << 10  # counted per stored file beyond its bytes (last block, extent blocks)


def body_limit(path: str) -> int:
    return ROUTE_BODY_LIMITS.get(path, JSON_BODY_LIMIT)


@dataclass
class BodyBudget:
    """Bytes of request bodies held in memory at once, over all connections."""

    total: int = BODY_MEMORY_BUDGET
    used: int = 0

    def take(self, n: int) -> None:
        if self.used + n > self.total:
            raise too_large()
        self.used += n

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


@dataclass
class DiskQuota:
    """Bytes the decoy's store may occupy (uploads count as they arrive). Past it, writes fail the way a
    full disk makes Ollama fail."""

    blobs_dir: Path
    limit: int = DEFAULT_UPLOAD_QUOTA
    used: int = field(default=0)

    def __post_init__(self) -> None:
        self.used = allocated_bytes(self.blobs_dir)

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)

    def full_disk(self, shown_blobs_dir: str) -> BadRequest:
        """Ollama's error when os.CreateTemp(blobs, "sha256-") then io.Copy hit ENOSPC."""
        name = f"sha256-{secrets.randbelow(4_000_000_000)}"
        return BadRequest(500, f"write {shown_blobs_dir}/{name}: no space left on device")


def allocated_bytes(directory: Path) -> int:
    """Disk blocks in use under a directory (sparse files count what they really occupy)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total
