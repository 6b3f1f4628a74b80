#!/usr/bin/env python3
"""An HTTP server of input images for the gateway's tests (what a caller's image URL points at).

  /files/NAME          the bytes of DIR/NAME (Content-Type from the extension)
  /redirect/N/NAME     a 302 chain of N hops ending at /files/NAME
  /big/BYTES           a PNG signature followed by BYTES filler bytes
  /status/CODE         answers CODE with a text body
  /slow                sends headers, then nothing for a minute
  /not-http            answers like an SSH server (no HTTP) and closes

GET /requests returns the paths asked for, in order. Prints "READY <port>" once listening.
"""
import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

requests = []
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    directory = "."

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/octet-stream", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path
        if path == "/requests":
            with lock:
                return self.send(200, json.dumps(requests).encode(), "application/json")
        with lock:
            requests.append(path)
        parts = path.strip("/").split("/")
        if parts[0] == "files" and len(parts) == 2 and "/" not in parts[1] and not parts[1].startswith("."):
            file = os.path.join(self.directory, parts[1])
            if not os.path.isfile(file):
                return self.send(404, b"no such file", "text/plain")
            kind = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}.get(parts[1].rsplit(".", 1)[-1], "application/octet-stream")
            with open(file, "rb") as handle:
                return self.send(200, handle.read(), kind)
        if parts[0] == "redirect" and len(parts) == 3:
            hops = int(parts[1])
            target = f"/files/{parts[2]}" if hops <= 1 else f"/redirect/{hops - 1}/{parts[2]}"
            return self.send(302, b"", "text/plain", [("Location", target)])
        if parts[0] == "big" and len(parts) == 2:
            return self.send(200, b"\x89PNG\r\n\x1a\n" + b"\0" * int(parts[1]), "image/png")
        if parts[0] == "status" and len(parts) == 2:
            return self.send(int(parts[1]), b"status", "text/plain")
        if parts[0] == "slow":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            time.sleep(60)
            return
        if parts[0] == "not-http":
            self.wfile.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
            self.wfile.flush()
            self.close_connection = True
            return
        self.send(404, b"not found", "text/plain")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--directory", required=True)
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args()
    Handler.directory = arguments.directory
    server = ThreadingHTTPServer(("127.0.0.1", arguments.port), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
