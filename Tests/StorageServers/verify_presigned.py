#!/usr/bin/env python3
"""Checks an S3 presigned URL with botocore, AWS's own SigV4 code (a dependency of moto).

Usage: verify_presigned.py URL ACCESS_KEY_ID SECRET_ACCESS_KEY NOW_EPOCH_SECONDS
Prints and exits with: `valid` 0, `signature-mismatch` 1, `expired` 2, `malformed` 3.
moto 5 does not check object-level signatures or expiry, so the tests ask this instead.
"""
import calendar
import sys
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def verdict(url, access_key_id, secret, now):
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(params)
    try:
        signature = given["X-Amz-Signature"]
        amz_date = given["X-Amz-Date"]
        expires = int(given["X-Amz-Expires"])
        key_id, _, region, service, _ = given["X-Amz-Credential"].split("/")
    except (KeyError, ValueError):
        return "malformed", 3
    if key_id != access_key_id or given.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return "signature-mismatch", 1
    # The request as it was before signing: botocore adds the X-Amz-* parameters itself.
    rest = [(k, v) for k, v in params if not k.startswith("X-Amz-")]
    request = AWSRequest(method="GET", url=urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), "")))
    request.context["timestamp"] = amz_date
    auth = S3SigV4QueryAuth(Credentials(access_key_id, secret), service, region, expires=expires)
    auth._modify_request_before_signing(request)
    canonical_request = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical_request), request)
    if expected != signature:
        return "signature-mismatch", 1
    signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    if now > signed_at + expires:
        return "expired", 2
    return "valid", 0


if __name__ == "__main__":
    text, code = verdict(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    print(text)
    sys.exit(code)
