"""Benchmark `ollama-guard verify` against `sha256sum` on a ≥ 2 GB model store (not a test).

    python bench/verify.py [--size-gb 2.2] [--dir bench/out/verify-store] [--rounds 3] [--sweep] [--keep]

Builds a store in Ollama's layout (random-data blobs named by their sha256, manifests referencing them),
then, in the same run and alternating the order each round, times:
  * `sha256sum` over every blob (what a careful admin would do by hand), and
  * `ollama-guard verify --format json` (full run: inventory, hashing, GGUF/template checks),
  * `openssl dgst -sha256` (OpenSSL's SHA-NI code, the fastest single-threaded hasher at hand),
both with a warm page cache and with a cold one (the store's files are evicted with
posix_fadvise(DONTNEED), which needs no privileges and leaves other processes' cache alone), then
`verify --baseline --changed-only` on the unchanged store. `--sweep` also times the hashing core alone
for several read sizes and worker counts. The store is deleted afterwards unless --keep is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GUARD = [sys.executable, "-m", "ollama_guard"]
MiB = 1024 * 1024

# (model name, weights size in MiB): one big model and a few smaller ones, like a real store.
MODEL_SIZES = [("llama3.1:8b", 1100), ("qwen2.5:3b", 560), ("phi3:mini", 300), ("gemma3:1b", 180),
               ("smollm2:360m", 70), ("nomic-embed-text:latest", 40)]  # fmt: skip


def gguf_prefix(name: str) -> bytes:
    """A valid GGUF v3 header (no tensors, two metadata keys); random bytes follow it."""

    def string(s: str) -> bytes:
        return struct.pack("<Q", len(s)) + s.encode()

    kvs = string("general.architecture") + struct.pack("<I", 8) + string("llama")
    kvs += string("general.name") + struct.pack("<I", 8) + string(name)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kvs


def write_blob(blobs: Path, size: int, prefix: bytes = b"") -> tuple[str, int]:
    digest = hashlib.sha256(prefix)
    tmp = blobs / f"tmp-{os.getpid()}"
    with tmp.open("wb") as handle:
        handle.write(prefix)
        left = size - len(prefix)
        while left:
            chunk = os.urandom(min(left, 8 * MiB))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    name = "sha256:" + digest.hexdigest()
    tmp.rename(blobs / ("sha256-" + digest.hexdigest()))
    return name, size


def build_store(root: Path, size_gb: float) -> int:
    marker = root.with_name(root.name + ".complete")
    if marker.exists():
        return int(marker.read_text())
    shutil.rmtree(root, ignore_errors=True)
    blobs = root / "blobs"
    blobs.mkdir(parents=True)
    scale = size_gb * 1024 / sum(s for _, s in MODEL_SIZES)
    total = 0
    for name, mib in MODEL_SIZES:
        model, tag = name.split(":")
        weights = write_blob(blobs, int(mib * scale * MiB), gguf_prefix(name))
        layers = [
            {"mediaType": "application/vnd.ollama.image.model", "digest": weights[0], "size": weights[1]}
        ]
        for media, text in (
            (
                "template",
                "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ .Prompt }}",
            ),
            ("params", '{"stop":["<|im_end|>"],"temperature":0.7}'),
            ("license", f"License text for {name}\n" * 50),
        ):
            data = text.encode()
            digest = hashlib.sha256(data).hexdigest()
            (blobs / f"sha256-{digest}").write_bytes(data)
            layers.append(
                {
                    "mediaType": f"application/vnd.ollama.image.{media}",
                    "digest": f"sha256:{digest}",
                    "size": len(data),
                }
            )
        config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
        config_digest = hashlib.sha256(config).hexdigest()
        (blobs / f"sha256-{config_digest}").write_bytes(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": f"sha256:{config_digest}",
                "size": len(config),
            },
            "layers": layers,
        }
        path = root / "manifests" / "registry.ollama.ai" / "library" / model / tag
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, separators=(",", ":")))
        total += sum(layer["size"] for layer in layers) + len(config)
    os.sync()
    marker.write_text(str(total))
    return total


def evict(root: Path) -> None:
    """Drop the store's pages from the page cache (only ours)."""
    for path in (root / "blobs").iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


CPU_TIMES: dict[str, list[float]] = {}


def timed(argv: list[str], env: dict[str, str] | None = None, label: str = "") -> tuple[float, str]:
    """Wall time of one run; its CPU time (user + system, from the children's rusage) goes to CPU_TIMES."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU_TIMES.setdefault(label or argv[0], []).append(cpu)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed, proc.stdout


def compare(root: Path, rounds: int, cold: bool, workers: int | None) -> dict[str, list[float]]:
    blob_files = sorted(str(p) for p in (root / "blobs").iterdir())
    sha_argv = ["sha256sum", *blob_files]
    verify_argv = [*GUARD, "verify", "--models-dir", str(root), "--format", "json"]
    if workers:
        verify_argv += ["--workers", str(workers)]
    openssl_argv = ["openssl", "dgst", "-sha256", *blob_files]
    times: dict[str, list[float]] = {"sha256sum": [], "verify": [], "openssl": []}
    if not cold:  # warm the cache once
        timed(sha_argv, label="warm-up")
    for i in range(rounds):
        order = [("sha256sum", sha_argv), ("verify", verify_argv), ("openssl", openssl_argv)]
        order = order[i % 3 :] + order[: i % 3]  # rotate who goes first
        for label, argv in order:
            if cold:
                evict(root)
            elapsed, out = timed(argv, label=label)
            if label == "verify":
                report = json.loads(out)
                if report["findings"]:
                    raise SystemExit(f"unexpected findings: {[f['rule'] for f in report['findings']]}")
            times[label].append(elapsed)
    return times


def sweep(root: Path) -> None:
    sys.path.insert(0, str(REPO / "src"))
    from ollama_guard.verify.hashing import sha256_files

    paths = sorted((root / "blobs").iterdir())
    for chunk in (1 * MiB, 4 * MiB, 8 * MiB, 16 * MiB):
        for workers in (1, 2, 4):
            runs = []
            for _ in range(2):
                started = time.perf_counter()
                sha256_files(paths, workers=workers, chunk_size=chunk)
                runs.append(time.perf_counter() - started)
            print(f"  sweep warm: chunk {chunk // MiB:>2} MiB, workers {workers}: {min(runs):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gb", type=float, default=2.2)
    parser.add_argument("--dir", type=Path, default=REPO / "bench" / "out" / "verify-store")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--no-cold", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    total = build_store(args.dir, args.size_gb)
    print(
        f"store: {args.dir} ({total / 1e9:.2f} GB in {len(list((args.dir / 'blobs').iterdir()))} blobs, "
        f"built/reused in {time.perf_counter() - started:.1f} s); cpus: {os.cpu_count()}, "
        f"load: {os.getloadavg()[0]:.2f}"
    )
    try:
        results = {"warm": compare(args.dir, args.rounds, cold=False, workers=args.workers)}
        if not args.no_cold:
            results["cold"] = compare(args.dir, args.rounds, cold=True, workers=args.workers)
        for cache, times in results.items():
            sha = statistics.median(times["sha256sum"])
            ver = statistics.median(times["verify"])
            print(
                f"{cache:>4} cache: sha256sum {sha:6.2f} s ({total / sha / 1e6:6.0f} MB/s) | "
                f"verify {ver:6.2f} s ({total / ver / 1e6:6.0f} MB/s) | verify/sha256sum = {ver / sha:.2f}x "
                f"(runs: sha256sum {', '.join(f'{t:.2f}' for t in times['sha256sum'])}; "
                f"verify {', '.join(f'{t:.2f}' for t in times['verify'])})"
            )
            ossl = statistics.median(times["openssl"])
            print(
                f"{'':>4}        openssl dgst -sha256 (SHA-NI) {ossl:6.2f} s "
                f"({total / ossl / 1e6:6.0f} MB/s) | verify/openssl = {ver / ossl:.2f}x"
            )

        cpu = {
            label: statistics.median(v)
            for label, v in CPU_TIMES.items()
            if label in ("sha256sum", "verify", "openssl")
        }
        print(
            "CPU time (user+sys) per run, median over warm and cold: "
            + ", ".join(f"{label} {value:.2f} s" for label, value in cpu.items())
        )

        env = {**os.environ, "OLLAMA_GUARD_BASELINE_KEY": "bench-only-baseline-key-0123456789"}
        baseline = args.dir.parent / "verify-bench-baseline.json"
        timed(
            [
                *GUARD,
                "verify",
                "--models-dir",
                str(args.dir),
                "--format",
                "json",
                "--save-baseline",
                str(baseline),
            ],
            env,
        )
        changed = []
        for _ in range(args.rounds):
            elapsed, out = timed(
                [
                    *GUARD,
                    "verify",
                    "--models-dir",
                    str(args.dir),
                    "--format",
                    "json",
                    "--baseline",
                    str(baseline),
                    "--changed-only",
                ],
                env,
            )
            summary = json.loads(out)["summary"]
            assert summary["bytes_hashed"] == 0, summary
            changed.append(elapsed)
        print(
            f"--changed-only on the unchanged store: {statistics.median(changed):.2f} s "
            f"(runs: {', '.join(f'{t:.2f}' for t in changed)}; 0 bytes hashed)"
        )
        baseline.unlink(missing_ok=True)
        if args.sweep:
            sweep(args.dir)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
            args.dir.with_name(args.dir.name + ".complete").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
