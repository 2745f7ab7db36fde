"""A stand-in for Ollama that reads every request body whole and answers from a script of canned
answers — for tests where the upstream's own limits or timing must not get in the way (the decoy
refuses bodies over 8 MiB, as a careful Ollama look-alike should).

Run: `python canned_upstream.py ANSWERS.json`; prints `canned upstream listening on http://127.0.0.1:PORT`.
ANSWERS.json maps "METHOD /path" to {"status": int, "body": str, "content_type": str,
"chunks": [str, ...] (streamed one per `interval` seconds, chunked encoding), "repeat": int}.
Every request is appended as one JSON line to ANSWERS.json + ".log" (method, path, body size).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

DEFAULT = {"status": 200, "body": '{"status":"ok"}', "content_type": "application/json"}


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answers: dict, log: Path
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            parts = (line.partition(":") for line in lines[1:] if line)
            headers = {k.strip().lower(): v.strip() for k, _, v in parts}
            size = 0
            if "content-length" in headers:
                remaining = int(headers["content-length"])
                while remaining:
                    chunk = await reader.read(min(remaining, 1 << 20))
                    if not chunk:
                        return
                    size += len(chunk)
                    remaining -= len(chunk)
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    length = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(length + 2)
                    size += length
                    if length == 0:
                        break
            with log.open("a") as out:
                out.write(json.dumps({"method": method, "path": target, "size": size}) + "\n")
            answer = answers.get(f"{method} {target}", DEFAULT)
            status, ctype = answer.get("status", 200), answer.get("content_type", "application/json")
            first = f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n"
            if "chunks" in answer:
                head_text = first + "Transfer-Encoding: chunked\r\n\r\n"
                writer.write(head_text.encode())
                for _ in range(answer.get("repeat", 1)):
                    for piece in answer["chunks"]:
                        data = piece.encode()
                        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                        await writer.drain()
                        await asyncio.sleep(answer.get("interval", 0))
                writer.write(b"0\r\n\r\n")
            else:
                body = answer["body"].encode()
                head_text = first + f"Content-Length: {len(body)}\r\n\r\n"
                writer.write(head_text.encode() + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(path: str, answers: dict) -> None:
    log = Path(path + ".log")
    server = await asyncio.start_server(lambda r, w: handle(r, w, answers, log), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"canned upstream listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(Path(sys.argv[1]).read_text())))
