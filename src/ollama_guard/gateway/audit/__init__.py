"""The gateway's tamper-evident audit log.

* ``record``   — the record's fields, normalisation and canonical bytes;
* ``spool``    — the durable local spool (append-only segments, group-commit fsync, replay);
* ``chain``    — the HMAC chains: one per writer, plus the shared checkpoint chain;
* ``writer``   — the writer process: spool → chain → database, one persistent connection;
* ``recorder`` — the request path's interface (``record``, ``spool_before_forward``, ``accepting``);
* ``ack``      — what an answer's last byte waits for (``audit_sync``: fsync, or a durable reservation);
* ``verify``   — ``logs verify``: edits, splices, gaps and cut-off tails, named;
* ``prune``    — ``logs prune --before DATE`` with base anchors;
* ``read``     — ``logs tail`` and ``investigate --audit-db``;
* ``follow``   — following new records per writer (``logs tail -f``, ``watch``, the console's live view);
* ``legacy``   — an older release's single chain (``og_audit_log``): its MAC and its migration.

See docs/gateway.md ("The audit log") for the design and its guarantees.
"""

from ollama_guard.gateway.audit.read import read_records, tail
from ollama_guard.gateway.audit.record import RECORD_FIELDS, AuditRecord, RecordFields
from ollama_guard.gateway.audit.recorder import AuditUnavailable, Recorder, spool_dir_for
from ollama_guard.gateway.audit.verify import Problem, VerifyResult, verify_chain

__all__ = [
    "RECORD_FIELDS",
    "AuditRecord",
    "AuditUnavailable",
    "Problem",
    "RecordFields",
    "Recorder",
    "VerifyResult",
    "read_records",
    "spool_dir_for",
    "tail",
    "verify_chain",
]
