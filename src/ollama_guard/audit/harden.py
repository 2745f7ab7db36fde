"""`harden`: turn the audit's fixes into files to review. Nothing is installed, run or changed.

Layout of the output directory:
  plan.md                  every step, in order, with the exact command and its impact
  audit.json               the findings that led to the plan
  files/<path>             files to install at <path> on the audited host (drop-ins, Compose
                           overrides, corrected copies of env files and plists) + <path>.diff
  gateway/                 config.toml, ollama-guard.service, create-admin-key.sh
  firewall/                nftables.conf, iptables-docker-user.sh, ufw.sh
"""

from __future__ import annotations

import difflib
import json
import os
import plistlib
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from ollama_guard.audit.exposure import Posture, ollama_ports
from ollama_guard.audit.fixes import (
    CommandFix,
    ComposeFix,
    DropInFix,
    Fix,
    LineEditFix,
    PlistFix,
    ServerJsonFix,
    render_compose_override,
)
from ollama_guard.audit.hostspec import DEFAULT_PORT
from ollama_guard.audit.runner import AuditResult
from ollama_guard.audit.sources.systemd import DROPIN_NAME, SYSTEM_UNIT_DIRS
from ollama_guard.errors import GuardError, InputError
from ollama_guard.redact import contains_credential, is_sensitive_name, redact_text

GATEWAY_CONFIG_PATH = "/etc/ollama-guard/config.toml"
GATEWAY_UNIT_PATH = "/etc/systemd/system/ollama-guard.service"
GATEWAY_PORT = 11435


@dataclass
class Step:
    title: str
    body: str
    impact: str


@dataclass
class Plan:
    out: Path
    steps: list[Step] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def write(self, relative: str, content: str | bytes, *, executable: bool = False) -> Path:
        """Write one plan file, readable by its owner only (the plan quotes the host's configuration)."""
        path = self.out / relative
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        mode = 0o700 if executable else 0o600
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            path.chmod(mode)  # also when --force rewrote an existing file
        except OSError as exc:
            raise GuardError(
                f"cannot write {path}: {exc.strerror or exc} (choose a writable --out directory)"
            ) from None
        self.written.append(path)
        return path

    def write_installable(
        self, logical: str, content: str | bytes, original: str | bytes | None = None
    ) -> str:
        rel = "files" + posixpath.join("/", logical)
        self.write(rel, content)
        if original is not None and isinstance(content, str) and isinstance(original, str):
            self.write(rel + ".diff", _diff(logical, original, content))
        return rel

    def write_patch_only(self, logical: str, content: str, original: str) -> str:
        """For a file that holds credentials: only the changed lines, as a patch (no copy of the file).

        The diff has no context lines, so no line the edit does not touch is written; the changed lines
        themselves are redacted too (if one held a credential, the patch says so and must be applied by
        hand).
        """
        rel = "files" + posixpath.join("/", logical) + ".diff"
        self.write(rel, _diff(logical, redact_text(original), redact_text(content), context=0))
        return rel


def _diff(logical: str, original: str, content: str, context: int = 3) -> str:
    return "".join(
        difflib.unified_diff(
            original.splitlines(keepends=True),
            content.splitlines(keepends=True),
            fromfile=f"a{logical}",
            tofile=f"b{logical}",
            n=context,
        )
    )


def prepare_out_dir(out: Path, root: Path | None, force: bool) -> None:
    if root is not None:
        try:
            out.resolve().relative_to(root.resolve())
            inside = True
        except ValueError:
            inside = False
        if inside:
            raise InputError(
                f"--out {out} is inside --root {root}; harden never writes into the audited root"
            )
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"--out {out} is not empty (use --force to write into it anyway)")
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise InputError(f"cannot create --out {out}: {exc.strerror or exc}") from None


def _fixes(result: AuditResult) -> list[tuple[Fix, str]]:
    """Every fix of every finding, with the rule it fixes."""
    return [(fix, o.finding.rule) for o in result.outcomes for fix in o.fixes]


def write_plan(result: AuditResult, out: Path) -> Plan:
    ctx = result.context
    fs = ctx.fs
    plan = Plan(out)
    pairs = _fixes(result)
    ports = sorted(ollama_ports(ctx.facts))
    upstream_port = _primary_port(result)

    # 1. systemd drop-ins: one per unit, loopback bind pinned, plus every env fix for that unit.
    dropins: dict[tuple[str, str], tuple[DropInFix, dict[str, str], list[str]]] = {}
    for inst in ctx.facts.instances:
        if inst.kind == "systemd":
            base = DropInFix(
                str(inst.extra["dropin_path"]), str(inst.extra["unit"]), str(inst.extra["scope"]), ()
            )
            key = (base.unit, posixpath.dirname(base.path))
            dropins[key] = (base, {"OLLAMA_HOST": ctx.loopback_value(inst)}, [])
    for fix, rule in pairs:
        if isinstance(fix, DropInFix):
            key = (fix.unit, posixpath.dirname(fix.path))
            merged = DropInFix(posixpath.join(key[1], DROPIN_NAME), fix.unit, fix.scope, ())
            _base, env, rules = dropins.setdefault(key, (merged, {}, []))
            env.update(dict(fix.env))
            rules.append(rule)
    if not dropins and (fs.is_dir("/etc/systemd") or not ctx.facts.instances):
        default = DropInFix(
            posixpath.join(SYSTEM_UNIT_DIRS[0], "ollama.service.d", DROPIN_NAME),
            "ollama.service",
            "system",
            (),
        )
        dropins[("ollama.service", "")] = (
            default,
            {"OLLAMA_HOST": f"127.0.0.1:{DEFAULT_PORT}", "OLLAMA_NO_CLOUD": "1"},
            [],
        )
    for base, env, rules in dropins.values():
        path = base.path
        content = base.content(tuple(env.items()))
        rel = plan.write_installable(path, content)
        fixed = f" Fixes: {', '.join(sorted(set(rules)))}." if rules else " Pins the safe default."
        plan.steps.append(
            Step(
                f"Install the systemd drop-in for {base.unit}",
                f"Copy `{rel}` to `{path}`, then run `{base.restart()}`.\n\n```ini\n{content}```\n{fixed}",
                "Ollama listens on 127.0.0.1 only; remote clients must go through the gateway (step below). "
                "Settings in the drop-in override earlier Environment= lines of the unit.",
            )
        )

    # 2. Line edits of env files (grouped per file).
    edits: dict[str, list[LineEditFix]] = {}
    for fix, _rule in pairs:
        if isinstance(fix, LineEditFix):
            edits.setdefault(fix.path, []).append(fix)
    for path, file_edits in edits.items():
        original = fs.read_text(path)
        if original is None:
            continue
        patched = _apply_line_edits(original, file_edits)
        after = sorted({e.after for e in file_edits if e.after})
        if contains_credential(original):
            rel = plan.write_patch_only(path, patched, original)
            how = (
                f"`{path}` holds credentials, so no copy of it is written: review `{rel}` (only the "
                f"changed lines) and apply it with `patch {path} {rel}`, or make the same edit by hand."
            )
        else:
            rel = plan.write_installable(path, patched, original)
            how = f"Review `{rel}.diff`, then replace `{path}` with `{rel}`."
        plan.steps.append(
            Step(
                f"Correct {path}",
                how + (f" Then run `{'; '.join(after)}`." if after else " New login sessions pick it up."),
                "The listed variables get safe values (or fall back to Ollama's defaults).",
            )
        )

    # 3. Compose overrides (grouped per compose file).
    composes: dict[str, list[ComposeFix]] = {}
    for fix, _rule in pairs:
        if isinstance(fix, ComposeFix):
            composes.setdefault(fix.compose_file, []).append(fix)
    for compose_file, cfixes in composes.items():
        override = cfixes[0].override_file
        local = any(
            i.extra.get("local_file")
            for i in ctx.facts.instances
            if i.extra.get("compose_file") == compose_file
        )
        exists = Path(override).exists() if local else fs.exists(override)
        content = (
            "# Written by ollama-guard harden: publish Ollama on loopback only.\n"
            + render_compose_override(cfixes)
        )
        target = override
        how = f"Copy it to `{override}`"
        if exists:
            target = posixpath.join(posixpath.dirname(compose_file), "compose.ollama-guard.yaml")
            how = (
                f"`{override}` already exists: copy this file to `{target}` and run "
                f"`docker compose -f {compose_file} -f {override} -f {target} up -d`, "
                "or merge it into the override"
            )
        rel = plan.write_installable(target, content)
        plan.steps.append(
            Step(
                f"Override Compose file {compose_file}",
                f"{how}, then run `docker compose -f {compose_file} up -d`.\n\n```yaml\n{content}```",
                "The container's port is published on 127.0.0.1 only; "
                "other machines reach it through the gateway. "
                "Needs Docker Compose 2.24 or newer for `!override`.",
            )
        )

    # 4. launchd plists (all changes to one plist merged) and server.json.
    plists: dict[str, dict[str, str | None]] = {}
    server_jsons: list[str] = []
    for fix, _rule in pairs:
        if isinstance(fix, PlistFix):
            plists.setdefault(fix.path, {}).update(dict(fix.env))
        elif isinstance(fix, ServerJsonFix) and fix.path not in server_jsons:
            server_jsons.append(fix.path)
    for path, changes in plists.items():
        data = fs.read_bytes(path)
        if data is None:
            continue
        job = plistlib.loads(data)
        variables = dict(job.get("EnvironmentVariables") or {})
        for key, value in changes.items():
            if value is None:
                variables.pop(key, None)
            else:
                variables[key] = value
        job["EnvironmentVariables"] = variables
        merged = PlistFix(path, tuple(changes.items()))
        if _plist_has_credentials(job):
            alternative = "\n\nThe job holds credentials, so no copy is written: run the commands above."
        else:
            rel = plan.write_installable(path, plistlib.dumps(job))
            alternative = f"\n\nOr install the corrected copy `{rel}`."
        plan.steps.append(
            Step(
                f"Correct launchd job {path}",
                merged.describe() + alternative,
                "The job restarts with the safe environment.",
            )
        )
    for path in server_jsons:
        current = fs.read_text(path)
        try:
            loaded = json.loads(current) if current else {}
        except ValueError:
            loaded = {}
        settings = loaded if isinstance(loaded, dict) else {}
        settings["disable_ollama_cloud"] = True
        patched = json.dumps(settings, indent=2) + "\n"
        if current is not None and contains_credential(current):
            rel = plan.write_patch_only(path, patched, current)
            how = f"`{path}` holds credentials: set `\"disable_ollama_cloud\": true` by hand (see `{rel}`)"
        else:
            rel = plan.write_installable(path, patched, current)
            how = f"Copy `{rel}` to `{path}`"
        plan.steps.append(
            Step(
                f"Disable Ollama cloud in {path}",
                f"{how} and restart Ollama.",
                "Cloud models and web search stop working on this server.",
            )
        )

    # 5. The gateway.
    _gateway_files(plan, result, upstream_port)

    # 6. Firewall rules.
    _firewall_files(plan, ports)

    # 7. Commands from the findings (permissions, upgrades, restarts).
    commands: list[str] = []
    for fix, rule in pairs:
        if isinstance(fix, CommandFix):
            block = f"- **{rule}**: {fix.note}\n" + "".join(f"  - `{c}`\n" for c in fix.commands)
            if block not in commands:
                commands.append(block)
    if commands:
        plan.steps.append(
            Step(
                "Run the remaining commands from the findings",
                "".join(commands),
                "See each finding's remediation in audit.json.",
            )
        )

    plan.write("audit.json", _report_json(result))
    plan.write("plan.md", _plan_markdown(result, plan))
    return plan


def _primary_port(result: AuditResult) -> int:
    for inst in result.context.facts.instances:
        if inst.effective and not inst.containerised:
            return inst.bind().port
        for pub in inst.publishes:
            if pub.host_port.isdigit():
                return int(pub.host_port)
    return DEFAULT_PORT


def _plist_has_credentials(job: dict[str, object]) -> bool:
    """Any credential-named variable, or any string in the job that redaction would change."""
    variables = job.get("EnvironmentVariables")
    if isinstance(variables, dict) and any(is_sensitive_name(str(n)) and v for n, v in variables.items()):
        return True

    def strings(value: object) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [t for k, v in value.items() for t in (*strings(k), *strings(v))]
        if isinstance(value, list):
            return [t for v in value for t in strings(v)]
        return []

    return any(contains_credential(t) for t in strings(job))


def _apply_line_edits(text: str, edits: list[LineEditFix]) -> str:
    lines = text.splitlines()
    for edit in sorted(edits, key=lambda e: e.line, reverse=True):
        index = edit.line - 1
        if not 0 <= index < len(lines):
            continue
        span = max(1, edit.old.count("\n") + 1)
        replacement = [f"# {line}  (disabled by ollama-guard)" for line in lines[index : index + span]]
        if edit.new is not None:
            replacement.append(edit.new)
        lines[index : index + span] = replacement
    return "\n".join(lines) + ("\n" if text.endswith("\n") or not text else "")


def _gateway_files(plan: Plan, result: AuditResult, upstream_port: int) -> None:
    exposed = result.context.posture is Posture.EXPOSED
    listen = f"0.0.0.0:{GATEWAY_PORT}" if exposed else f"127.0.0.1:{GATEWAY_PORT}"
    config = f"""# ollama-guard gateway configuration (written by `ollama-guard harden`; review before use).
# Install as {GATEWAY_CONFIG_PATH}. Clients call the gateway with `Authorization: Bearer <key>`.
[gateway]
# Where clients connect. {
        "Ollama was reachable from the network, so the gateway takes over that role."
        if exposed
        else "Loopback only; change to 0.0.0.0:" + str(GATEWAY_PORT) + " to serve other machines."
    }
listen = "{listen}"
# Ollama itself, on loopback only (see the systemd drop-in / Compose override steps).
upstream = "http://127.0.0.1:{upstream_port}"
db = "sqlite:////var/lib/ollama-guard/guard.db"
# Client networks allowed at all; narrow this to your LAN, e.g. ["10.0.0.0/8", "192.168.0.0/16"].
allow_cidrs = ["0.0.0.0/0", "::/0"]
# Only these peers' X-Forwarded-For is believed (a reverse proxy in front of the gateway).
trusted_proxies = []
max_body_bytes = 16777216
# Browser origins allowed to call the gateway (never "*").
cors_origins = []
# Model egress: no pushes anywhere, pulls only from the Ollama registry, no insecure registries.
push_registries = []
pull_registries = ["registry.ollama.ai"]
allow_insecure = false
allow_cloud = false
# TLS: set both to serve HTTPS directly.
# tls_cert = "/etc/ollama-guard/tls.crt"
# tls_key = "/etc/ollama-guard/tls.key"
"""
    rel_cfg = plan.write("gateway/config.toml", config).relative_to(plan.out)
    unit = f"""# ollama-guard gateway service (written by `ollama-guard harden`; review before use).
# Install as {GATEWAY_UNIT_PATH}, then: systemctl daemon-reload && systemctl enable --now ollama-guard
[Unit]
Description=ollama-guard authenticating gateway for Ollama
After=network-online.target ollama.service
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/ollama-guard serve --config {GATEWAY_CONFIG_PATH}
User=ollama-guard
Group=ollama-guard
StateDirectory=ollama-guard
StateDirectoryMode=0700
Environment="OLLAMA_GUARD_HOME=/var/lib/ollama-guard"
Restart=on-failure
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""
    rel_unit = plan.write("gateway/ollama-guard.service", unit).relative_to(plan.out)
    key_script = f"""#!/bin/sh
# Creates the first admin key for the gateway. NOT run by harden: run it yourself after installing
# {GATEWAY_CONFIG_PATH}. The secret is printed once (last line): store it in a password manager.
# Runs as the gateway's user so the key database stays readable by the service only.
set -eu
sudo -u ollama-guard env OLLAMA_GUARD_HOME=/var/lib/ollama-guard \\
  ollama-guard keys create admin --role admin --config {GATEWAY_CONFIG_PATH}
# Then give each application its own narrower key, e.g. (same user and environment):
#   ollama-guard keys create webui --role inference --models 'llama3*' --rpm 60 --config {GATEWAY_CONFIG_PATH}
"""
    rel_key = plan.write("gateway/create-admin-key.sh", key_script, executable=True).relative_to(plan.out)
    plan.steps.append(
        Step(
            "Put the ollama-guard gateway in front of Ollama",
            "1. Create the service user: "
            "`useradd --system --no-create-home --shell /usr/sbin/nologin ollama-guard`.\n"
            f"2. Copy `{rel_cfg}` to `{GATEWAY_CONFIG_PATH}` and review `listen`/`allow_cidrs`.\n"
            f"3. Copy `{rel_unit}` to `{GATEWAY_UNIT_PATH}` and run "
            "`systemctl daemon-reload && systemctl enable --now ollama-guard`.\n"
            f"4. Create the first admin key: `sh {rel_key}` (prints the secret once).\n"
            f"5. Point clients at `http://<this host>:{GATEWAY_PORT}` with `Authorization: Bearer <key>`.",
            "Every request needs a key; pushes, insecure pulls and cloud models are refused; "
            "every decision is logged. Clients that called Ollama directly must be given a key "
            "and the gateway's address.",
        )
    )


def _firewall_files(plan: Plan, ports: list[int]) -> None:
    port_set = ", ".join(str(p) for p in ports)
    nft = f"""# nftables: drop remote traffic to Ollama's port(s) (written by `ollama-guard harden`).
# Load with: nft -f nftables.conf   (persist by including it from /etc/nftables.conf)
table inet ollama_guard {{
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "lo" accept
    tcp dport {{ {port_set} }} drop
  }}
}}
"""
    docker = (
        "#!/bin/sh\n# Docker-published ports bypass the INPUT chain; DOCKER-USER sees them (run as root).\n"
        "set -eu\n"
    )
    docker += "".join(
        f"iptables -I DOCKER-USER -p tcp -m conntrack --ctorigdstport {p} --ctdir ORIGINAL "
        "! -s 127.0.0.0/8 -j DROP\n"
        for p in ports
    )
    ufw = "#!/bin/sh\n# ufw (does not cover Docker-published ports; see iptables-docker-user.sh).\nset -eu\n"
    ufw += "".join(f"ufw deny {p}/tcp\n" for p in ports)
    plan.write("firewall/nftables.conf", nft)
    plan.write("firewall/iptables-docker-user.sh", docker, executable=True)
    plan.write("firewall/ufw.sh", ufw, executable=True)
    plan.steps.append(
        Step(
            "Add a firewall rule as a second line of defence",
            f"Pick one: `nft -f firewall/nftables.conf`, `sh firewall/ufw.sh`, and for Docker hosts "
            f"`sh firewall/iptables-docker-user.sh`. Ports: {port_set}.",
            "Remote connections to Ollama's port are dropped even if a later change binds it "
            "to 0.0.0.0 again; "
            f"the gateway's port {GATEWAY_PORT} stays open.",
        )
    )


def _report_json(result: AuditResult) -> str:
    from ollama_guard.reports import render

    return render(result.report, "json")


def _plan_markdown(result: AuditResult, plan: Plan) -> str:
    report = result.report
    counts = report.counts()
    lines = [
        "# ollama-guard hardening plan",
        "",
        f"Audited: `{result.context.facts.root}` "
        f"({'live host' if result.context.facts.live else 'offline root'}); "
        f"posture: **{result.context.posture.value}**.",
        "Findings: " + ", ".join(f"{n} {sev}" for sev, n in counts.items() if n)
        if report.findings
        else "Findings: none.",
        "",
        "Nothing has been changed: every file below is a proposal to review. "
        "Paths under `files/` mirror where "
        "each file goes on the audited host (a `.diff` shows the change to an existing file).",
        "",
    ]
    if report.findings:
        lines += ["## Findings", "", "| severity | rule | target | title |", "|---|---|---|---|"]
        lines += [
            f"| {f.severity.value} | {f.rule} | `{f.target}` | {f.title} |" for f in report.sorted_findings()
        ]
        lines.append("")
    lines += ["## Steps", ""]
    for number, step in enumerate(plan.steps, start=1):
        lines += [f"### {number}. {step.title}", "", step.body.rstrip(), "", f"**Impact:** {step.impact}", ""]
    lines += ["## Files written", ""]
    lines += [f"- `{p.relative_to(plan.out)}`" for p in plan.written]
    lines.append("- `plan.md`")
    return "\n".join(lines) + "\n"
