"""A local upward platform for the push tests: a real HTTPS server on a free port in a thread.

It answers the first ``fail_first`` requests with 503, then accepts. It keeps what a real
receiver must: one delivery per ``Idempotency-Key`` (a resend of an accepted key gets 200 and
the same receipt, ``duplicate: true``), and it checks the bearer token (401 otherwise).
``answer_delay_s`` holds the accepting answer back after recording it, so a test can kill the
sender between the receiver's acceptance and the sender's record of it.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from secure_broker import make_ca, make_server_cert

from shulian.devservices import free_port

TOKEN = "push-token-for-tests"


@dataclass
class Received:
    key: str
    body: bytes
    headers: dict[str, str]
    answered: int


@dataclass
class Receiver:
    folder: Path
    fail_first: int = 2
    answer_delay_s: float = 0.0
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    accepted: dict[str, bytes] = field(default_factory=dict)
    """Idempotency key -> the body accepted under it: the receiver's deliveries."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/upload/daily"

    @property
    def ca_file(self) -> Path:
        return self.folder / "receiver-ca.crt"

    def answer(self, key: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if headers.get("authorization") != f"Bearer {TOKEN}":
                status, reply = 401, {"error": "bad token"}
            elif hashlib.sha256(body).hexdigest() != headers.get("x-shulian-content-sha256"):
                status, reply = 400, {"error": "content hash does not match the body"}
            elif key in self.accepted:
                status, reply = 200, {"receipt": f"r-{key}", "duplicate": True}
            elif sum(1 for r in self.requests if r.answered != 401) < self.fail_first:
                status, reply = 503, {"error": "busy, try later"}
            else:
                json.loads(body)  # a receiver parses what it accepts
                self.accepted[key] = body
                status, reply = 200, {"receipt": f"r-{key}", "duplicate": False}
            self.requests.append(Received(key, body, headers, status))
        return status, reply


def start_receiver(folder: Path, **options: Any) -> tuple[Receiver, ThreadingHTTPServer]:
    ca_key, ca_cert = make_ca(folder, "receiver-ca")
    make_server_cert(folder, ca_key, ca_cert)
    receiver = Receiver(folder, **options)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, reply = receiver.answer(headers.get("idempotency-key", ""), body, headers)
            if status == 200 and receiver.answer_delay_s:
                time.sleep(receiver.answer_delay_s)
            payload = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "server.crt", folder / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server
