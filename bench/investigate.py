"""Benchmark for `ollama-guard investigate` (not a test).

Generates a realistic Ollama server log of at least --size bytes (default 1 GiB: a busy server's owner
traffic on loopback, model-load output, LAN users, and every day some Internet scanning, compute theft,
a deletion, an exfiltration chain and a crash), then times, over the same file in the same run:

* ``grep -c 'GIN' FILE`` (the floor: one pass over the bytes), and
* the full ``ollama-guard investigate FILE --format json`` (a separate process, like a user runs it),

prints both wall times, their ratio, and the analysis's peak RSS. The file goes to bench/out/ (git-ignored)
or --out, and is deleted afterwards unless --keep.

    /work/venv/bin/python bench/investigate.py [--size 1G] [--out DIR] [--keep] [--reuse]
        [--trusted CIDR] [--prefix journald]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

DAY = datetime(2024, 8, 19)
LOCAL = [
    ("POST", "/api/chat", 40),
    ("POST", "/api/generate", 15),
    ("GET", "/api/tags", 15),
    ("GET", "/api/ps", 8),
    ("POST", "/api/embed", 6),
    ("POST", "/v1/chat/completions", 8),
    ("GET", "/api/version", 3),
    ("POST", "/api/show", 4),
    ("GET", "/", 1),
]
LATENCY = [
    "971.777µs",
    "1.193025ms",
    "414.019µs",
    "36.584739ms",
    "2.48105ms",
    "183.2µs",
    "32.779561288s",
    "5.923456s",
    "12.34567891s",
    "1.5012s",
    "16m31s",
    "0s",
]
LOADER = [
    'time={t} level=INFO source=server.go:395 msg="starting llama server" cmd="/usr/lib/ollama/runners/'
    "cuda_v12/ollama_llama_server --model /usr/share/ollama/.ollama/models/blobs/"
    "sha256-6a0746a1ec1aef3e7ec53868f2"
    "20ff6e389f6f8ef87a01d77c96807de94ca2aa --ctx-size 8192 --batch-size 512 --n-gpu-layers 33 --threads 8 "
    '--parallel 4 --port 41233"',
    'time={t} level=INFO source=sched.go:450 msg="loaded runners" count=1',
    *[
        f"llama_model_loader: - kv {k:3d}: {name:<40} = {val}"
        for k, (name, val) in enumerate(
            [
                ("general.architecture", "str = llama"),
                ("general.name", "str = Meta Llama 3.1 8B Instruct"),
                ("llama.block_count", "u32 = 32"),
                ("llama.context_length", "u32 = 131072"),
                ("llama.embedding_length", "u32 = 4096"),
                ("llama.feed_forward_length", "u32 = 14336"),
                ("llama.attention.head_count", "u32 = 32"),
                ("tokenizer.ggml.model", "str = gpt2"),
                ("tokenizer.ggml.tokens", 'arr[str,128256] = ["!", "\\"", "#", ...]'),
                ("general.quantization_version", "u32 = 2"),
            ]
        )
    ],
    "llm_load_print_meta: format           = GGUF V3 (latest)",
    "llm_load_print_meta: arch             = llama",
    "llm_load_print_meta: n_ctx_train      = 131072",
    "llm_load_print_meta: model type       = 8B",
    "llm_load_print_meta: model ftype      = Q4_0",
    "llm_load_tensors: offloaded 33/33 layers to GPU",
    "llama_new_context_with_model: n_ctx      = 8192",
    "llama_kv_cache_init:      CUDA0 KV buffer size =  1024.00 MiB",
    'time={t} level=INFO source=server.go:626 msg="llama runner started in 3.52 seconds"',
]


def gin(t: datetime, status: int, latency: str, client: str, method: str, path: str) -> str:
    return (
        f'[GIN] {t:%Y/%m/%d - %H:%M:%S} | {status:3d} | {latency:>13} | {client:>15} | {method:<7}  "{path}"'
    )


def day_block(rnd: random.Random, lines_per_day: int) -> str:
    """One day of log for DAY (dates are rewritten per day when written out)."""
    out: list[str] = []
    weights = [w for _, _, w in LOCAL]
    step = 86400 / lines_per_day
    t = DAY
    iso = lambda when: when.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # noqa: E731
    out.append(
        f'time={iso(t)} level=INFO source=routes.go:1123 msg="server config" env="map[HTTPS_PROXY: '
        "OLLAMA_DEBUG:false OLLAMA_HOST:http://0.0.0.0:11434 OLLAMA_KEEP_ALIVE:5m0s "
        "OLLAMA_MODELS:/usr/share/ollama/.ollama/models OLLAMA_ORIGINS:[http://localhost app://*] "
        'OLLAMA_SCHED_SPREAD:false]"'
    )
    out.append(
        f'time={iso(t)} level=INFO source=routes.go:1170 msg="Listening on [::]:11434 (version 0.3.5)"'
    )
    events = {  # second of the day → an attack episode
        rnd.randrange(3600, 80000): "recon" for _ in range(12)
    }
    events[rnd.randrange(20000, 30000)] = "abuse"
    events[rnd.randrange(40000, 50000)] = "exfil"
    events[rnd.randrange(50000, 60000)] = "delete"
    events[rnd.randrange(60000, 70000)] = "crash"
    pending = sorted(events.items())
    while len(out) < lines_per_day:
        t += timedelta(seconds=rnd.expovariate(1 / step))
        if t.day != DAY.day:
            break
        second = (t - DAY).total_seconds()
        while pending and pending[0][0] <= second:
            out.extend(_episode(pending.pop(0)[1], t, rnd))
        r = rnd.random()
        if r < 0.86:
            method, path, _ = rnd.choices(LOCAL, weights)[0]
            status = 200 if rnd.random() < 0.97 else rnd.choice([400, 404, 500])
            out.append(gin(t, status, rnd.choice(LATENCY), "127.0.0.1", method, path))
        elif r < 0.9:
            method, path, _ = rnd.choices(LOCAL[:3], weights[:3])[0]
            out.append(gin(t, 200, rnd.choice(LATENCY), f"192.168.1.{rnd.randint(20, 40)}", method, path))
        elif r < 0.9015:
            out.extend(line.format(t=iso(t)) for line in LOADER)
        elif r < 0.93:
            out.append(
                f'time={iso(t)} level=INFO source=server.go:1013 msg="llama runner stopped" '
                f"model=/usr/share/ollama/.ollama/models/blobs/sha256-6a0746a1ec1a"
            )
        else:
            out.append(gin(t, 200, rnd.choice(LATENCY), "127.0.0.1", "POST", "/api/chat"))
    return "\n".join(out) + "\n"


def _episode(kind: str, t: datetime, rnd: random.Random) -> list[str]:
    first = rnd.choice([203, 198, 45, 91, 185])
    ip = f"{first}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
    s = lambda k: t + timedelta(seconds=k)  # noqa: E731
    if kind == "recon":
        return [
            gin(s(0), 200, "25.341µs", ip, "GET", "/"),
            gin(s(0), 200, "19.702µs", ip, "GET", "/api/version"),
            gin(s(1), 200, "1.583119ms", ip, "GET", "/api/tags"),
            gin(s(2), 200, "88.413µs", ip, "GET", "/api/ps"),
        ]
    if kind == "abuse":
        return [gin(s(20 * k), 200, "14.2133s", ip, "POST", "/api/generate") for k in range(120)]
    if kind == "exfil":
        return [
            gin(s(0), 201, "6.9918ms", ip, "POST", "/api/blobs/sha256:" + "ab704f" * 10 + "abcd"),
            gin(s(3), 200, "1.918274s", ip, "POST", "/api/create"),
            gin(s(9), 200, "2.18192ms", ip, "POST", "/api/copy"),
            f"time={s(10):%Y-%m-%dT%H:%M:%S}.000Z level=INFO source=upload.go:114 "
            'msg="uploading 6a0746a1ec1a in 48 100 MB part(s)"',
            gin(s(190), 200, "3m0s", ip, "POST", "/api/push"),
        ]
    if kind == "delete":
        return [gin(s(0), 200, "2.2ms", ip, "DELETE", "/api/delete")]
    return [
        gin(s(0), 400, "153.324µs", ip, "POST", "/api/pull"),
        "panic: runtime error: slice bounds out of range [:19] with length 0",
        "",
        "goroutine 51 [running]:",
        "github.com/ollama/ollama/server.downloadBlob({0x55c0a1b2c3d0, 0xc0001a2b30}, ...)",
        "\t/go/src/github.com/ollama/ollama/server/download.go:478 +0x6b8",
    ]


def generate(path: Path, size: int, seed: int, prefix: str) -> tuple[int, float]:
    rnd = random.Random(seed)
    block = day_block(rnd, 200_000)
    if prefix == "journald":
        block = (
            "\n".join(f"Aug 19 12:00:00 gpu-box ollama[1232]: {line}" for line in block.splitlines()) + "\n"
        )
    raw = block.encode("utf-8")
    started = time.perf_counter()
    written = 0
    day = 0
    with path.open("wb") as fh:
        while written < size:
            d = DAY + timedelta(days=day)
            chunk = raw.replace(b"2024/08/19", d.strftime("%Y/%m/%d").encode())
            chunk = chunk.replace(b"2024-08-19", d.strftime("%Y-%m-%d").encode())
            chunk = chunk.replace(b"Aug 19 ", d.strftime("%b %d ").encode())
            fh.write(chunk)
            written += len(chunk)
            day += 1
    return day, time.perf_counter() - started


CPU: dict[str, list[float]] = {}


def timed(argv: list[str], label: str) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Wall time of a command; its CPU time (user+sys, all its processes) is kept in CPU[label]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.setdefault(label, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, proc


def _runs(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="use an existing generated file")
    parser.add_argument("--prefix", choices=["none", "journald"], default="none")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(
        "--trusted",
        default="192.168.1.0/24",
        help="passed to investigate --trusted (the generated LAN); '' for none",
    )
    args = parser.parse_args()
    size = parse_size(args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ollama-{args.prefix}-{args.size}.log"
    free = shutil.disk_usage(args.out).free
    if not (args.reuse and path.exists()):
        if free < 3 * size:
            sys.exit(f"not enough space in {args.out}: {free >> 20} MiB free, want {3 * size >> 20} MiB")
        days, secs = generate(path, size, args.seed, args.prefix)
        print(f"generated {path} ({path.stat().st_size / 1e9:.2f} GB, {days} days) in {secs:.1f}s")
    try:
        lines = 0
        grep_times = []
        for _ in range(args.runs):
            secs, proc = timed(["grep", "-c", "GIN", str(path)], "grep")
            grep_times.append(secs)
            lines = int(proc.stdout.strip() or 0)
        ours_times = []
        report: dict = {}
        for _ in range(args.runs):
            argv = [
                sys.executable,
                "-m",
                "ollama_guard",
                "investigate",
                str(path),
                "--format",
                "json",
                "--fail-on",
                "never",
            ]
            if args.trusted:
                argv += ["--trusted", args.trusted]
            secs, proc = timed(argv, "ours")
            if proc.returncode != 0:
                sys.exit(f"investigate failed: {proc.stderr.decode()[-500:]}")
            ours_times.append(secs)
            report = json.loads(proc.stdout)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        grep_best, ours_best = min(grep_times), min(ours_times)
        size_gb = path.stat().st_size / 1e9
        print(f"investigate --trusted {args.trusted or '(none)'}")
        print(f"file: {size_gb:.2f} GB, {report['summary']['lines']:,} lines, {lines:,} lines with GIN")
        print(
            f"grep -c GIN:              {grep_best:6.2f} s  (runs: {_runs(grep_times)})"
        )
        print(
            f"ollama-guard investigate: {ours_best:6.2f} s  (runs: {_runs(ours_times)})"
            f"  = {size_gb / ours_best:.2f} GB/s"
        )
        print(f"ratio investigate / grep: {ours_best / grep_best:.2f}x (wall)")
        grep_cpu, ours_cpu = min(CPU["grep"]), min(CPU["ours"])
        print(
            f"CPU seconds (user+sys): grep {grep_cpu:.2f}, investigate {ours_cpu:.2f} "
            f"= {ours_cpu / grep_cpu:.2f}x; load average now {os.getloadavg()[0]:.2f}"
        )
        print(f"peak RSS of a child process: {rss:.0f} MiB; cpus: {os.cpu_count()}")
        counts = report["summary"]["by_severity"]
        print(f"findings: {report['summary']['findings']} {counts}; clients: {report['summary']['clients']}")
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
