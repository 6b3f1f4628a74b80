#!/usr/bin/env python3
"""A webhook receiver for the gateway's tests: verifies each delivery's Standard Webhooks
signature with Python's own hmac (an implementation independent of the gateway's) and
records it. Behaviour by path:

  /ok           answers 200
  /fail/N       answers 500 to the first N deliveries of each webhook-id, then 200
  /hang         never answers (the gateway's timeout must end it)
  /slow/MS      answers 200 after MS milliseconds (recorded on arrival)
  /reset        closes the connection without an answer

GET /deliveries returns what arrived, in order. Prints "READY <port>" once listening.
"""
import argparse
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

deliveries = []
lock = threading.Lock()


def verify(secret: str, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    try:
        fresh = abs(time.time() - int(timestamp)) < 300
    except ValueError:
        return False
    signatures = [part.split(",", 1)[1] for part in header.split(" ") if part.startswith("v1,")]
    return fresh and any(hmac.compare_digest(expected, s) for s in signatures)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/deliveries":
            self.send_error(404)
            return
        with lock:
            body = json.dumps(deliveries).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        msg_id = self.headers.get("webhook-id", "")
        timestamp = self.headers.get("webhook-timestamp", "")
        signature = self.headers.get("webhook-signature", "")
        record = {
            "path": self.path,
            "id": msg_id,
            "timestamp": timestamp,
            "verified": verify(self.server.secret, msg_id, timestamp, body, signature),
            "content_type": self.headers.get("Content-Type"),
            "body": json.loads(body) if body else None,
            "at": time.time(),
        }
        if self.path == "/hang":
            record["answer"] = "hang"
            with lock:
                deliveries.append(record)
            time.sleep(3600)
            return
        if self.path == "/reset":
            record["answer"] = "reset"
            with lock:
                deliveries.append(record)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            return
        if self.path.startswith("/slow/"):
            record["answer"] = 200
            with lock:
                deliveries.append(record)
            time.sleep(int(self.path.split("/")[2]) / 1000)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status = 200
        if self.path.startswith("/fail/"):
            failures = int(self.path.split("/")[2])
            with lock:
                earlier = sum(1 for d in deliveries if d["id"] == msg_id and d["path"] == self.path)
            status = 500 if earlier < failures else 200
        record["answer"] = status
        with lock:
            deliveries.append(record)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.secret = args.secret
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
