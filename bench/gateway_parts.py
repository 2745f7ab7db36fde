"""Where a proxied request's CPU goes, part by part (a benchmark, not a test).

Ablation in one run: five servers (`bench/parts_servers.py`) and nginx as a reverse proxy serve the
same requests (`wrk`, keep-alive, an admin key in `Authorization`) from the same loopback upstream
stub (nginx with canned Ollama answers, bench/gateway.py's). Each server adds one part to the one
before it, so the CPU time per request of neighbours, taken in the same round, gives that part's cost:

    HTTP server (parse, respond, syscalls)   fixed                          (the floor)
    upstream client                          passthrough − fixed
    stage pipeline                           pipeline − passthrough         (metrics off, audit dropped)
    metrics                                  metrics − pipeline
    audit, serving process                   full − metrics
    audit, writer process                    the full gateway's writer process, per request

CPU time per request = the process's user and system CPU (psutil, all threads) over a wrk run divided
by the requests wrk completed; system time is where the system calls show. Rounds interleave the
servers (order reversed every other round) so they see the same neighbours on a shared machine; each
figure is the median of the rounds with their range. `--pollers` adds the pipeline with the key and
ban pollers stopped (what polling every 0.25 s costs). Idle CPU per second of every server is taken
first.

The pipeline is then split by stage two ways: in process (`bench/parts_stages.py`: each stage timed
on its own, no I/O, warm caches — a lower bound), and by one run of the full gateway under cProfile
(the serving thread's CPU clock; profiler-inflated, only the shares mean much).

    python bench/gateway_parts.py [--quick] [--duration 5] [--rounds 3] [--only show] [--no-profile]
                                  [--pollers]

Everything runs on loopback. Needs nginx and wrk on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as gw_bench  # bench/gateway.py: nginx configs, wrk runner, key creation
import parts_servers
import parts_stages

NGINX = "nginx proxy"
QUIET = "quiet-pollers"
BASELINE = "full (baseline)"
BASELINE_FIXED = "fixed (baseline)"
SLOW_WRITER = "full-writer-0.2"
TARGETS = (*parts_servers.VARIANTS, NGINX)
PARTS = (  # (label, variant, variant it is measured against)
    ("HTTP server: parse, respond, syscalls", "fixed", None),
    ("upstream client", "passthrough", "fixed"),
    ("stage pipeline", "pipeline", "passthrough"),
    ("metrics", "metrics", "pipeline"),
    ("audit, serving process", "full", "metrics"),
)


@dataclass
class Sample:
    rps: float
    user_us: float  # serving process, per request
    sys_us: float
    child_us: float  # its child processes (the audit writer), user + system, per request
    errors: int


@dataclass
class Runs:
    targets: tuple[str, ...] = TARGETS
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.samples = {t: [] for t in self.targets}


def cpu(pid: int) -> tuple[float, float, float]:
    """user and system CPU seconds of a process (all threads), and of its descendants together."""
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    children = 0.0
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
            children += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return times.user, times.system, children


def start(variant: str, upstream: str, db_url: str, env: dict[str, str], profile: Path | None = None
          ) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, __file__, "--serve", variant, "--upstream", upstream, "--db", db_url]
    if profile is not None:
        argv += ["--profile-out", str(profile)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(parts_servers.READY):
        gw_bench.stop(proc)
        raise SystemExit(f"{variant} did not start: {line!r}")
    return proc, line[len(parts_servers.READY):].strip()


def check(url: str, method: str, body: str | None, token: str) -> None:
    """One request before the load: a variant that answers wrongly posts no figures."""
    request = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:  # a loopback URL we built
        if resp.status != 200 or not resp.read():
            raise SystemExit(f"{url} answered {resp.status}")


def measure(pid: int, url: str, method: str, body: str | None, token: str, args: argparse.Namespace,
            workdir: Path) -> Sample:
    u0, s0, c0 = cpu(pid)
    r = gw_bench.run_wrk(url, method, body, token, args.duration, args.connections, args.threads, workdir)
    u1, s1, c1 = cpu(pid)
    n = max(r.requests, 1)
    return Sample(r.rps, (u1 - u0) / n * 1e6, (s1 - s0) / n * 1e6, (c1 - c0) / n * 1e6, r.errors)


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    """median [min–max]"""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def part_rows(runs: Runs) -> list[tuple[str, list[float], list[float], list[float]]]:
    """(label, user µs, system µs, total µs) per round, for each part, then the totals."""
    s = runs.samples
    rows = []
    for label, variant, base in PARTS:
        user = [x.user_us - (s[base][i].user_us if base else 0) for i, x in enumerate(s[variant])]
        sys_ = [x.sys_us - (s[base][i].sys_us if base else 0) for i, x in enumerate(s[variant])]
        rows.append((label, user, sys_, [a + b for a, b in zip(user, sys_, strict=True)]))
    if QUIET in s:
        user = [x.user_us - q.user_us for x, q in zip(s["pipeline"], s[QUIET], strict=True)]
        sys_ = [x.sys_us - q.sys_us for x, q in zip(s["pipeline"], s[QUIET], strict=True)]
        rows.append(("  of the pipeline: key + ban pollers (every 0.25 s)", user, sys_,
                     [a + b for a, b in zip(user, sys_, strict=True)]))
    writer = [x.child_us for x in s["full"]]
    rows.append(("audit, writer process", [], [], writer))
    if SLOW_WRITER in s:
        rows.append(("  the same, writer polling every 0.2 s (not 0.02 s)", [], [],
                     [x.child_us for x in s[SLOW_WRITER]]))
    rows.append(("gateway, serving process", [x.user_us for x in s["full"]], [x.sys_us for x in s["full"]],
                 [x.user_us + x.sys_us for x in s["full"]]))
    rows.append(("gateway, both processes", [], [], [x.user_us + x.sys_us + x.child_us for x in s["full"]]))
    rows.append(("nginx as reverse proxy", [x.user_us for x in s[NGINX]], [x.sys_us for x in s[NGINX]],
                 [x.user_us + x.sys_us + x.child_us for x in s[NGINX]]))
    return rows


def report(workload: str, runs: Runs) -> list[str]:
    s = runs.samples
    full_total = statistics.median(x.user_us + x.sys_us + x.child_us for x in s["full"])
    lines = [f"#### {workload}", "",
             "| Part | user µs | system µs | total µs | share of the gateway |", "|---|---:|---:|---:|---:|"]
    for label, user, sys_, total in part_rows(runs):
        share = "–" if label.startswith("nginx") else f"{statistics.median(total) / full_total:.0%}"
        lines.append(f"| {label} | {spread(user) if user else '–'} | {spread(sys_) if sys_ else '–'} | "
                     f"{spread(total)} | {share} |")
    rps = " · ".join(f"{t} {statistics.median(x.rps for x in s[t]):,.0f}" for t in runs.targets)
    share = [g.rps / n.rps for g, n in zip(s["full"], s[NGINX], strict=True)]
    cpu_ratio = [(g.user_us + g.sys_us + g.child_us) / (n.user_us + n.sys_us)
                 for g, n in zip(s["full"], s[NGINX], strict=True)]
    if BASELINE in s:
        cpu_ab = [(x.user_us + x.sys_us + x.child_us) / (b.user_us + b.sys_us + b.child_us)
                  for x, b in zip(s["full"], s[BASELINE], strict=True)]
        serving_ab = [(x.user_us + x.sys_us) / (b.user_us + b.sys_us) for x, b in zip(s["full"], s[BASELINE],
                                                                                     strict=True)]
        rps_ab = [x.rps / b.rps for x, b in zip(s["full"], s[BASELINE], strict=True)]
        base_cpu = [b.user_us + b.sys_us for b in s[BASELINE]]
        fixed_ab = [(x.user_us + x.sys_us) / (b.user_us + b.sys_us)
                    for x, b in zip(s["fixed"], s[BASELINE_FIXED], strict=True)]
        lines += ["", f"HTTP server floor (fixed) vs the baseline tree's: "
                      f"{spread([x.user_us + x.sys_us for x in s['fixed']])} vs "
                      f"{spread([b.user_us + b.sys_us for b in s[BASELINE_FIXED]])} µs "
                      f"(×{spread(fixed_ab, '{:.2f}')})."]
        lines += ["", f"Full gateway vs the baseline tree, same round: serving-process CPU per request "
                      f"{spread([x.user_us + x.sys_us for x in s['full']])} vs {spread(base_cpu)} µs "
                      f"(×{spread(serving_ab, '{:.2f}')}); both processes ×{spread(cpu_ab, '{:.2f}')}; "
                      f"req/s ×{spread(rps_ab, '{:.2f}')}."]
    lines += ["", f"req/s (median of rounds): {rps}.",
              f"Gateway req/s as a share of nginx's, same round: {spread([x * 100 for x in share])} %; "
              f"gateway CPU per request ÷ nginx's: ×{spread(cpu_ratio, '{:.1f}')}."]
    return lines


# --- the cProfile split ------------------------------------------------------------------------------

PROFILED = (  # (label, file suffix, function names): cumulative time; the stages do not nest
    ("client", "stages/client.py", ("__call__",)),
    ("route", "stages/route.py", ("__call__",)),
    ("authenticate", "stages/authenticate.py", ("authenticate",)),
    ("authorise", "stages/authorise.py", ("authorise",)),
    ("judge_body", "stages/judge_body.py", ("__call__",)),
    ("policy", "stages/policy.py", ("__call__",)),
    ("account: reservation", "stages/account.py", ("token_counter", "reservation")),
    ("limits", "stages/limits.py", ("admit", "release")),
    ("record: before_forward", "stages/record.py", ("before_forward",)),
    ("forward (incl. upstream exchange, response sends)", "stages/forward.py", ("__call__",)),
    ("  of which upstream client: send, await head, read", "/upstream.py", ("open", "read", "iter_chunks")),
    ("account", "stages/account.py", ("account",)),
    ("record (metrics + audit record)", "stages/record.py", ("record",)),
    ("  of which metrics", "/metrics.py", ("observe",)),
    ("  of which audit recorder", "audit/recorder.py", ("record",)),
    ("upstream client: response parsing (protocol callbacks)", "/upstream.py", ("data_received",)),
    ("uvicorn protocol: request parsing (data_received)", "httptools_impl.py", ("data_received",)),
    ("GatewayApp._http (the whole request in the app)", "gateway/app.py", ("_http",)),
)


def profile_split(path: Path) -> list[str]:
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    requests = sum(v[1] for k, v in stats.items() if k[0].endswith("stages/record.py") and k[2] == "record")
    total = sum(v[2] for v in stats.values())
    lines = [f"cProfile of the full gateway, serving thread, {requests:,} requests; profiler-inflated "
             f"(all Python-visible time: {total / max(requests, 1) * 1e6:.0f} µs per request):", "",
             "| Stage / part | µs per request (inflated) | share of the profiled time |", "|---|---:|---:|"]
    for label, suffix, names in PROFILED:
        ct = sum(v[3] for k, v in stats.items() if k[0].endswith(suffix) and k[2] in names)
        lines.append(f"| {label} | {ct / max(requests, 1) * 1e6:.0f} | {ct / total:.0%} |")
    return lines


def profile_run(upstream: str, db_url: str, env: dict[str, str], url_path: str, method: str,
                body: str | None, token: str, args: argparse.Namespace, workdir: Path) -> list[str]:
    out = workdir / "profile.pstats"
    proc, base = start("full", upstream, db_url, env, out)
    try:
        check(base + url_path, method, body, token)
        gw_bench.run_wrk(base + url_path, method, body, token, 1, args.connections, args.threads, workdir)
        os.kill(proc.pid, signal.SIGUSR1)
        gw_bench.run_wrk(base + url_path, method, body, token, args.duration, args.connections, args.threads,
                         workdir)
        os.kill(proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        lines = profile_split(out)
        if args.keep_profiles is not None:
            args.keep_profiles.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, args.keep_profiles / f"{url_path.strip('/').replace('/', '-')}.pstats")
        return lines
    finally:
        gw_bench.stop(proc)
        out.unlink(missing_ok=True)


def stage_split(db_url: str, upstream: str, token: str, method: str, path: str, body: str | None,
                quick: bool) -> list[str]:
    rows = parts_stages.run(db_url, upstream, token, method, path, body, n=1000 if quick else 3000, repeats=1)
    lines = ["The pipeline by stage, in process (no I/O, no event-loop or socket work, warm caches: a lower "
             "bound; the ablation above is what a request really costs):", "",
             "| Stage | µs per request (median) |", "|---|---:|"]
    lines += [f"| {label} | {us:.1f} |" for label, us in rows]
    return lines


def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU milliseconds per second of each server (and its children) while nobody sends it anything."""
    before = {v: cpu(pid) for v, pid in pids.items()}
    time.sleep(seconds)
    return {v: sum(cpu(pid)) * 1000 / seconds - sum(before[v]) * 1000 / seconds for v, pid in pids.items()}


# --- the driver ----------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s (about 2 minutes in all)")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None, help="only workloads whose name contains this text")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile split")
    parser.add_argument("--pollers", action="store_true",
                        help="also run the pipeline with the key and ban pollers stopped (their cost)")
    parser.add_argument("--slow-writer", action="store_true",
                        help="also run the full gateway with its audit writer polling every 0.2 s")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="also run the full gateway from the source tree DIR (e.g. `git worktree add "
                             "DIR main`), interleaved: before/after figures for a change")
    parser.add_argument("--keep-profiles", type=Path, default=None, help="keep the raw pstats files in DIR")
    parser.add_argument("--serve", choices=parts_servers.VARIANTS + parts_servers.EXTRA_VARIANTS,
                        help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        parts_servers.serve(args.serve, args.upstream, args.db, args.profile_out)
        return 0
    if args.quick:
        args.duration, args.rounds = 2, 2
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    workloads = {k: v for k, v in gw_bench.SCENARIOS.items() if not args.only or args.only in k}
    if not workloads:
        raise SystemExit(f"no workload matches {args.only!r}")

    workdir = Path(tempfile.mkdtemp(prefix="og-parts-"))
    upstream_port, proxy_port = gw_bench.free_port(), gw_bench.free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    (workdir / "upstream.conf").write_text(gw_bench.upstream_conf(workdir, upstream_port))
    (workdir / "proxy.conf").write_text(gw_bench.proxy_conf(workdir, upstream_port, proxy_port))
    nginxes = [subprocess.Popen(["nginx", "-c", str(workdir / n), "-p", str(workdir)], start_new_session=True)
               for n in ("upstream.conf", "proxy.conf")]
    env = {**os.environ, "OLLAMA_GUARD_HOME": str(workdir / "home"), "PYTHONUNBUFFERED": "1"}
    os.environ["OLLAMA_GUARD_HOME"] = env["OLLAMA_GUARD_HOME"]
    db_url = f"sqlite:///{workdir / 'guard.db'}"
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        time.sleep(0.5)
        token = gw_bench.create_admin_key(db_url)
        bases: dict[str, str] = {NGINX: f"http://127.0.0.1:{proxy_port}"}
        targets = (*parts_servers.VARIANTS, *([QUIET] if args.pollers else []),
                   *([SLOW_WRITER] if args.slow_writer else []),
                   *([BASELINE_FIXED, BASELINE] if args.baseline else []), NGINX)
        for variant in targets[:-1]:
            if variant in (BASELINE, BASELINE_FIXED):
                source = str((args.baseline / "src").resolve())
                baseline_env = {**env, "PYTHONPATH": source + os.pathsep + env.get("PYTHONPATH", "")}
                procs[variant], bases[variant] = start("full" if variant == BASELINE else "fixed", upstream,
                                                       db_url, baseline_env)
            else:
                procs[variant], bases[variant] = start(variant, upstream, db_url, env)
        pids = {v: p.pid for v, p in procs.items()}
        pids[NGINX] = gw_bench.process_tree(nginxes[1].pid)[-1]  # the worker (the master idles)
        print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; wrk -t{args.threads} "
              f"-c{args.connections} -d{args.duration}s; {args.rounds} interleaved rounds", flush=True)
        time.sleep(2)
        idle = idle_cpu(pids, 3.0 if args.quick else 6.0)
        idle_line = ("Idle CPU (nobody sending; key/ban pollers, readiness, the audit writer's polling), "
                     "ms per second: " + " · ".join(f"{v} {ms:.1f}" for v, ms in idle.items()) + ".")
        print(idle_line, flush=True)
        doc: list[str] = [idle_line, ""]
        summary: dict[str, dict[str, float]] = {}
        errors = 0
        for workload, (method, path, body) in workloads.items():
            stages = stage_split(db_url, upstream, token, method, path, body, args.quick)
            runs = Runs(targets)
            for target in targets:
                check(bases[target] + path, method, body, token)
                gw_bench.run_wrk(bases[target] + path, method, body, token, 1, args.connections, args.threads,
                                 workdir)  # warm: pools filled, code paths taken
            for rnd in range(args.rounds):
                for target in targets if rnd % 2 == 0 else reversed(targets):
                    sample = measure(pids[target], bases[target] + path, method, body, token, args, workdir)
                    runs.samples[target].append(sample)
                    errors += sample.errors
                    print(f"{workload:40s} round {rnd + 1} {target:12s} {sample.rps:9,.0f} req/s  "
                          f"user {sample.user_us:5.0f}  sys {sample.sys_us:5.0f}  children "
                          f"{sample.child_us:5.0f} µs/req  errors {sample.errors}", flush=True)
            lines = [*report(workload, runs), "", *stages]
            if not args.no_profile:
                lines += ["", *profile_run(upstream, db_url, env, path, method, body, token, args, workdir)]
            print("\n" + "\n".join(lines) + "\n", flush=True)
            doc += [*lines, ""]
            summary[workload] = {t: statistics.median(x.user_us + x.sys_us + x.child_us
                                                      for x in runs.samples[t]) for t in targets}
            summary[workload]["share_of_nginx_rps"] = statistics.median(
                g.rps / n.rps for g, n in zip(runs.samples["full"], runs.samples[NGINX], strict=True))
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        print(json.dumps(summary))
        if errors:
            print(f"WARNING: {errors} wrk errors or non-2xx answers", file=sys.stderr)
        return 1 if errors else 0
    finally:
        for proc in procs.values():
            gw_bench.stop(proc)
        for proc in nginxes:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
