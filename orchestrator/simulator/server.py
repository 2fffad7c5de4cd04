"""The HTTP plumbing: a threaded server on loopback that reads requests and writes replies in every way a
gateway can (normal, dropped, short, trickled, frozen, streamed). It knows nothing of DRS: a `respond`
callable turns each Request into a Reply."""

from __future__ import annotations

import select
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .replies import Reply, Request

MAX_BODY = 12 * 1024 * 1024  # APIG refuses bodies over 12 MB
# A client that goes away mid-answer is no error of the simulator's.
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class SimulatorServer(ThreadingHTTPServer):
    """A threaded HTTP server that hands every request to `respond`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], respond: Callable[[Request], Reply]) -> None:
        self.respond = respond
        self.stopping = threading.Event()
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that hung up (socket errors); anything else is still reported."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def shutdown(self) -> None:
        self.stopping.set()  # frozen answers give up their connections
        super().shutdown()


class Handler(BaseHTTPRequestHandler):
    """One request: read it whole, ask for the reply, write it the way the reply says."""

    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect from the real gateway
    server: SimulatorServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle plus delayed ACKs add ~40 ms a call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: every request is recorded in the simulator's ledger instead."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _read_body(self) -> bytes | None:
        """The raw body bytes (what a signature covers), None when larger than the gateway allows."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            size = 0
            while True:
                length = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    self.rfile.readline()
                    break
                size += length
                if size > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        try:
            body = self._read_body()
            request = Request(method, path, query, {k.lower(): v for k, v in self.headers.items()}, body,
                              uuid.uuid4().hex)
            self._write(self.server.respond(request))
        except _GONE:
            self.close_connection = True

    # -- writing ------------------------------------------------------------------------------------------

    def _head(self, reply: Reply, length: int | None) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if reply.headers.get("Connection", "").lower() == "close":
            self.close_connection = True

    def _write(self, reply: Reply) -> None:
        if reply.mode == "drop":
            self.close_connection = True  # not a byte of response: the client sees the connection closed
        elif reply.mode == "freeze":
            self._freeze(reply.freeze_seconds)
        elif reply.mode == "stream":
            self._head(reply, None)
            for chunk in reply.stream or ():
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        else:
            payload = reply.payload()
            self._head(reply, len(payload))
            if reply.mode == "short_read":
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif reply.mode == "trickle":
                self._trickle(payload, reply.byte_ms)
            else:
                self.wfile.write(payload)

    def _trickle(self, payload: bytes, byte_ms: float) -> None:
        self.wfile.flush()
        for i in range(len(payload)):
            if self.server.stopping.is_set():
                self.close_connection = True
                return
            self.wfile.write(payload[i : i + 1])
            self.wfile.flush()
            time.sleep(byte_ms / 1000.0)

    def _freeze(self, seconds: float) -> None:
        """Hold the connection without answering until the client leaves, the server stops or time is up."""
        self.close_connection = True
        deadline = time.monotonic() + seconds if seconds > 0 else None
        while not self.server.stopping.is_set() and (deadline is None or time.monotonic() < deadline):
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return  # the client closed its end
                except OSError:
                    return
                time.sleep(0.05)  # it sent more (a pipelined request): keep ignoring it
