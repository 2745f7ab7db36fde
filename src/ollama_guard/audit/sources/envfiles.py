"""Environment files outside units: /etc/environment (every login session, via pam_env) and
/etc/default/ollama or /etc/sysconfig/ollama when no unit is found loading them."""

from __future__ import annotations

from ollama_guard.audit.envsyntax import parse_pam_environment, parse_systemd_env_file
from ollama_guard.audit.model import EnvValue, Instance, Origin
from ollama_guard.audit.rootfs import RootFS

LOGIN_ENVIRONMENT = "/etc/environment"
DEFAULTS_FILES = ("/etc/default/ollama", "/etc/sysconfig/ollama")
OLLAMA_PREFIXES = ("OLLAMA_",)


def _ollama_only(env: dict[str, EnvValue]) -> dict[str, EnvValue]:
    return {k: v for k, v in env.items() if k.startswith(OLLAMA_PREFIXES)}


def collect(fs: RootFS, loaded_by_units: set[str]) -> list[Instance]:
    out: list[Instance] = []
    text = fs.read_text(LOGIN_ENVIRONMENT)
    if text is not None:
        env = {
            e.name: EnvValue(e.name, e.value, Origin("login-environment", LOGIN_ENVIRONMENT, e.line, e.text))
            for e in parse_pam_environment(text)
        }
        env = _ollama_only(env)
        if env:
            out.append(
                Instance(
                    kind="login-environment",
                    target=f"file:{LOGIN_ENVIRONMENT}",
                    label=f"{LOGIN_ENVIRONMENT} (every login session, so `ollama serve` started by hand)",
                    env=env,
                )
            )
    for path in DEFAULTS_FILES:
        if path in loaded_by_units:
            continue
        text = fs.read_text(path)
        if text is None:
            continue
        env = {
            e.name: EnvValue(e.name, e.value, Origin("environment-file", path, e.line, e.text))
            for e in parse_systemd_env_file(text)
        }
        env = _ollama_only(env)
        if env:
            out.append(
                Instance(
                    kind="environment-file",
                    target=f"file:{path}",
                    label=f"{path} (no unit found that loads it)",
                    env=env,
                    effective=False,
                )
            )
    return out
