"""A tiny SMTP server on 127.0.0.1 that keeps what it is sent (tests of SMTPURI).

with SmtpSink() as sink:
    ... send to 127.0.0.1:sink.port ...
    sink.messages    # [(mail_from, [rcpt, ...], data_bytes)], data without the final dot
SmtpSink(reject_rcpt=True) answers 550 to every RCPT.
"""

from __future__ import annotations

import socketserver
import threading
from typing import Any

__all__ = ["SmtpSink"]


class SmtpSink:
    def __init__(self, *, reject_rcpt: bool = False) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.reject_rcpt = reject_rcpt
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 sink ESMTP\r\n")
                sender, rcpts = "", []
                while line := self.rfile.readline():
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        self.wfile.write(b"250 sink\r\n")
                    elif verb == b"MAIL":
                        sender = line.decode().split(":", 1)[1].strip().strip("<>")
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == b"RCPT":
                        if owner.reject_rcpt:
                            self.wfile.write(b"550 no\r\n")
                            continue
                        rcpts.append(line.decode().split(":", 1)[1].strip().strip("<>"))
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == b"DATA":
                        self.wfile.write(b"354 go\r\n")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        owner.messages.append((sender, rcpts, data))
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SmtpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
