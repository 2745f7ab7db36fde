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

import json
import plistlib
import posixpath
from pathlib import Path

from ollama_guard.audit.exposure import ollama_ports
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
from ollama_guard.audit.plan import Plan, Step
from ollama_guard.audit.plan_gateway import firewall_files, gateway_files
from ollama_guard.audit.runner import AuditResult
from ollama_guard.audit.sources.systemd import DROPIN_NAME, SYSTEM_UNIT_DIRS
from ollama_guard.errors import InputError
from ollama_guard.redact import contains_credential, is_sensitive_name


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
        except (ValueError, RecursionError):
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
    gateway_files(plan, result, upstream_port)

    # 6. Firewall rules.
    firewall_files(plan, ports)

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
