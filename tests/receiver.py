"""An HTTP server that records what it is sent: apprise json:// alerts and pings arrive here."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading

TOKEN = "s3cr3t-hook-token-4711"


@dataclasses.dataclass
class Received:
    method: str
    path: str
    body: bytes

    def json(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.body)
        return data


class Receiver:
    """An HTTP server on a loopback port that records every request and answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.status = 200
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append(Received("POST", self.path, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the tests read ``requests``."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alert_url(self, path: str = TOKEN) -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def ping_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ping/{TOKEN}"

    def messages(self) -> list[dict[str, str]]:
        return [request.json() for request in self.requests]
