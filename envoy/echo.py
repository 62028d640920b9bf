#!/usr/bin/env python3
"""abmesh's demo upstream: answers every request with the headers it received, as JSON.

    python3 envoy/echo.py control=18081 treatment=18082[:fail=0.2]

Each NAME=PORT pair listens on 127.0.0.1:PORT and names itself NAME in the answer:
{"upstream": NAME, "method": ..., "path": ..., "headers": [[name, value], ...]}.
Header bytes are decoded as Latin-1, so any byte a client sent survives (re-encode with
Latin-1 to get the original bytes back). `:fail=R` makes that upstream answer 503 to a
fraction R of its requests, evenly spread (0.2: every fifth), for guardrail tests.
A request header `x-echo-fail: 1` makes that request fail with 503 whatever the upstream (a
client that plays a user who hits a bug on some of their requests).
A request header `x-echo-set-cookie: V` makes the answer carry `set-cookie: V`, as an
application's own cookie (the minted-id tests check abmesh's cookie goes beside it).
"""
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def handler_for(name, fail_rate=0.0):
    lock = threading.Lock()
    served = [0]

    def should_fail():
        with lock:
            n = served[0]
            served[0] += 1
        return int((n + 1) * fail_rate) > int(n * fail_rate)

    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are written separately: without this, Nagle plus delayed ACKs
        # add 40 ms to every response.
        disable_nagle_algorithm = True

        def answer(self):
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            body = json.dumps({
                "upstream": name,
                "method": self.command,
                "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
            }).encode()
            chosen = self.headers.get("x-echo-fail") == "1"
            self.send_response(503 if should_fail() or chosen else 200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            if self.headers.get("x-echo-set-cookie"):
                self.send_header("set-cookie", self.headers["x-echo-set-cookie"])
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = answer

        def log_message(self, *args):
            pass

    return Echo


def main():
    servers = []
    for arg in sys.argv[1:]:
        name, port = arg.split("=", 1)
        port, _, option = port.partition(":fail=")
        fail_rate = float(option) if option else 0.0
        server = ThreadingHTTPServer((os.environ.get("ECHO_BIND", "127.0.0.1"), int(port)), handler_for(name, fail_rate))
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    if not servers:
        sys.exit("usage: echo.py NAME=PORT [NAME=PORT...]")
    print("echo: listening on " + ", ".join(sys.argv[1:]), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
