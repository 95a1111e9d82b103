"""What a server replica needs to know: picklable, handed to every replica Ray Serve starts."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MAX_BODY_MB = 32  # a 10 s 12-lead XML is ~1 MB; a CODE HDF5 of 500 exams ~100 MB: split those
DEFAULT_REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServeOptions:
    export_dir: str
    backend: str  # resolved (never `auto`): every replica opens the same runtime
    precision: str = "fp32"
    threads: int | None = None
    max_batch: int = 64  # requests merged into one backend call
    batch_wait_ms: float = 5.0
    max_body_bytes: int = DEFAULT_MAX_BODY_MB * 2**20
    thresholds: dict[str, float] = field(default_factory=dict)
    workers: int | None = None  # input worker processes in each replica; None: auto (server.replica_workers)
