"""A throw-away self-signed certificate for TLS tests (openssl from the system)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed_cert(directory: Path, common_name: str, *, ip_san: str | None = None) -> tuple[Path, Path]:
    """(cert.pem, key.pem) valid for one day, with an IP subjectAltName when `ip_san` is given."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={common_name}"]  # fmt: skip
    if ip_san:
        argv += ["-addext", f"subjectAltName=IP:{ip_san}"]
    subprocess.run(argv, check=True, capture_output=True)
    return cert, key
