"""Routes that need no model store: `/`, `/api/version`, `/api/status`, the ollama.com account routes
(answered as a server that is not signed in; nothing leaves the machine) and experimental extras."""

from __future__ import annotations

import base64
import hashlib
import socket
from urllib.parse import quote

from ollama_guard.decoy import bodies as rq
from ollama_guard.decoy.http import Request, Send, send_json, send_text
from ollama_guard.decoy.inference import lookup
from ollama_guard.decoy.respond import model_not_found
from ollama_guard.decoy.state import DecoyState

RUNNER_STOPPED = (
    "model runner has unexpectedly stopped, this may be due to resource limitations or an "
    "internal error, check ollama server logs for details"
)


async def root(state: DecoyState, req: Request, send: Send) -> None:
    await send_text(send, 200, "Ollama is running")


async def version(state: DecoyState, req: Request, send: Send) -> None:
    await send_json(send, 200, {"version": state.settings.version})


async def status(state: DecoyState, req: Request, send: Send) -> None:
    await send_json(send, 200, {"cloud": {"disabled": False, "source": "none"}})


def fake_public_key(state: DecoyState) -> str:
    """A fabricated ed25519 public key line (never a real identity): random per store, stable across
    restarts (so two decoys never share one, and one decoy does not change between visits)."""
    seed = hashlib.sha256(b"decoy-identity|" + state.identity_seed()).digest()
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + seed
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def signin_url(state: DecoyState) -> str:
    key = base64.urlsafe_b64encode(fake_public_key(state).encode()).decode().rstrip("=")
    return f"https://ollama.com/connect?name={quote(socket.gethostname(), safe='')}&key={key}"


async def whoami(state: DecoyState, req: Request, send: Send) -> None:
    await send_json(send, 401, {"error": "unauthorized", "signin_url": signin_url(state)})


async def signout(state: DecoyState, req: Request, send: Send) -> None:
    await send_json(send, 401, {"error": "you are not currently signed in"})


async def web_proxy(state: DecoyState, req: Request, send: Send) -> None:
    await req.body()
    await send_json(send, 401, {"error": "unauthorized", "signin_url": signin_url(state)})


async def model_recommendations(state: DecoyState, req: Request, send: Send) -> None:
    await send_json(send, 200, {"recommendations": []})


async def aliases(state: DecoyState, req: Request, send: Send) -> None:
    if req.method == "GET":
        await send_json(send, 200, {"aliases": []})
        return
    await req.body()
    await send_json(send, 400, {"error": "aliases are not supported"})


async def runner_unavailable(state: DecoyState, req: Request, send: Send) -> None:
    """Routes the decoy does not simulate (responses, messages, audio, images): the model is looked up
    like Ollama does, then the "runner" fails the way an overloaded Ollama does."""
    body = rq.decode(await req.body(), rq.Struct("Request", {"model": "string"}))
    model = body.get("model", "")
    name, record = lookup(state, model)
    if name is None or record is None:
        raise model_not_found(model)
    await send_json(send, 500, {"error": RUNNER_STOPPED})
