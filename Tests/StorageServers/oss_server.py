#!/usr/bin/env python3
"""A minimal Aliyun OSS stand-in for the gateway's tests, with its own independent V1 signature check.

Buckets are virtual hosts (`<bucket>.localhost:<port>`), as on OSS. PUT needs
`Authorization: OSS <id>:<signature>`; GET needs either that header or a signed URL
(`OSSAccessKeyId`, `Expires`, `Signature`) that has not expired. Signatures are recomputed
here with Python's hmac/hashlib/base64: base64(HMAC-SHA1(secret, VERB\\nContent-MD5\\n
Content-Type\\nDate-or-Expires\\nCanonicalizedOSSHeaders + /bucket/key)).

Prints `READY <port>` once listening. `--fail-puts N` answers the first N uploads with 503;
`--put-delay-ms N` holds each signed upload that long before answering (`started` in the
stats counts the uploads that arrived so far, `puts` those answered).
"""
import argparse
import base64
import hashlib
import hmac
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit


def sign(secret, verb, content_md5, content_type, date, headers, resource):
    oss_headers = sorted((k.lower(), v.strip()) for k, v in headers.items() if k.lower().startswith("x-oss-"))
    text = f"{verb}\n{content_md5}\n{content_type}\n{date}\n" + "".join(f"{k}:{v}\n" for k, v in oss_headers) + resource
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()).decode()


class State:
    def __init__(self, access_key_id, secret, fail_puts, put_delay_ms=0):
        self.access_key_id = access_key_id
        self.secret = secret
        self.fail_puts = fail_puts
        self.put_delay_ms = put_delay_ms
        self.started = 0
        self.objects = {}
        self.puts = 0
        self.lock = threading.Lock()


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def answer(self, status, body=b"", content_type="application/xml"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def error(self, status, code, message):
            body = f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            self.answer(status, body.encode())

        def target(self):
            host = self.headers.get("Host", "")
            bucket = host.split(".")[0] if ".localhost" in host else None
            parts = urlsplit(self.path)
            return bucket, unquote(parts.path[1:]), dict(parse_qsl(parts.query, keep_blank_values=True))

        def header_signature_ok(self, bucket, key):
            authorization = self.headers.get("Authorization", "")
            if not authorization.startswith("OSS ") or ":" not in authorization:
                return False
            key_id, signature = authorization[4:].split(":", 1)
            expected = sign(state.secret, self.command, self.headers.get("Content-MD5", ""), self.headers.get("Content-Type", ""),
                            self.headers.get("Date", ""), dict(self.headers), f"/{bucket}/{key}")
            return key_id == state.access_key_id and hmac.compare_digest(signature, expected)

        def do_PUT(self):
            bucket, key, _ = self.target()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if bucket is None:
                return self.error(400, "InvalidBucketName", "use <bucket>.localhost")
            if not self.header_signature_ok(bucket, key):
                return self.error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
            with state.lock:
                state.started += 1
            time.sleep(state.put_delay_ms / 1000)
            with state.lock:
                state.puts += 1
                if state.puts <= state.fail_puts:
                    return self.error(503, "ServiceUnavailable", "Please reduce your request rate.")
                state.objects[(bucket, key)] = (body, self.headers.get("Content-Type", "application/octet-stream"))
            self.answer(200)

        def do_GET(self):
            bucket, key, query = self.target()
            if bucket == "control" and key == "stats":
                with state.lock:
                    text = "{\"started\": %d, \"puts\": %d, \"objects\": [%s]}" % (
                        state.started, state.puts, ",".join(f"\"{b}/{k}\"" for b, k in state.objects))
                return self.answer(200, text.encode(), "application/json")
            if "Signature" in query:
                expected = sign(state.secret, "GET", "", "", query.get("Expires", ""), {}, f"/{bucket}/{key}")
                if query.get("OSSAccessKeyId") != state.access_key_id or not hmac.compare_digest(query["Signature"], expected):
                    return self.error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
                if int(query.get("Expires", "0")) < time.time():
                    return self.error(403, "AccessDenied", "Request has expired.")
            elif not self.header_signature_ok(bucket, key):
                return self.error(403, "AccessDenied", "You have no right to access this object.")
            with state.lock:
                found = state.objects.get((bucket, key))
            if found is None:
                return self.error(404, "NoSuchKey", "The specified key does not exist.")
            self.answer(200, found[0], found[1])

        do_HEAD = do_GET

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--access-key-secret", required=True)
    parser.add_argument("--fail-puts", type=int, default=0)
    parser.add_argument("--put-delay-ms", type=int, default=0)
    arguments = parser.parse_args()
    state = State(arguments.access_key_id, arguments.access_key_secret, arguments.fail_puts, arguments.put_delay_ms)
    server = ThreadingHTTPServer(("127.0.0.1", arguments.port), make_handler(state))
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
