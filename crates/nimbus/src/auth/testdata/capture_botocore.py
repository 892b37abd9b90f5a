"""Capture Lambda Invoke requests signed by botocore, as golden fixtures for sigv4.rs.

Run from anywhere (python3 with botocore installed):

    python3 crates/nimbus/src/auth/testdata/capture_botocore.py

It writes, next to itself:

* botocore-sigv4auth-invoke.http: `botocore.auth.SigV4Auth` + `AWSRequest`, signed by hand;
* botocore-client-invoke.http: what `client("lambda").invoke(...)` really sends,
  caught in the `before-send` hook (so it carries the SDK's own headers:
  amz-sdk-invocation-id, amz-sdk-request, X-Amz-Log-Type, ...).

The format is the one the AWS SigV4 test suite uses: request line, `Name:value`
header lines in wire order, an empty line, the body. botocore signs `host` from
the URL without adding a Host header (urllib3 adds it on the wire), so we write
the Host line the server would receive.
"""

import datetime
import json
import os
from unittest import mock

import botocore
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

HERE = os.path.dirname(os.path.abspath(__file__))
# Naive UTC, as botocore's own get_current_datetime() returns.
FIXED_NOW = datetime.datetime(2025, 1, 1, 12, 0, 0)
HOST = "localhost:9000"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:f"
PATH = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af/invocations"
QUERY = "Qualifier=%24LATEST"
BODY = json.dumps({"hello": "world", "items": [1, 2, 3], "note": "a b+c/d"}).encode()


def write_fixture(name, method, url, headers, body):
    parts = botocore.compat.urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host:{parts.netloc}"]
    # A prepared request holds some values as bytes.
    decode = lambda v: v.decode() if isinstance(v, bytes) else v
    lines += [f"{k}:{decode(v)}" for k, v in headers.items()]
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(("\n".join(lines) + "\n\n").encode())
        f.write(body)
    print(f"wrote {name}: {method} {target}")


def capture_sigv4auth():
    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}{PATH}?{QUERY}",
        data=BODY,
        headers={
            "X-Amz-Invocation-Type": "RequestResponse",
            "X-Amz-Log-Type": "Tail",
            "Content-Type": "application/json",
        },
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=FIXED_NOW):
        SigV4Auth(Credentials("testing", "testing"), "lambda", "us-east-1").add_auth(request)
    write_fixture("botocore-sigv4auth-invoke.http", request.method, request.url, request.headers, BODY)


class Captured(Exception):
    pass


def capture_client():
    session = botocore.session.get_session()
    client = session.create_client(
        "lambda",
        region_name="us-east-1",
        endpoint_url=f"http://{HOST}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    seen = {}

    def before_send(request, **_):
        seen["request"] = request
        raise Captured()

    client.meta.events.register("before-send.lambda.Invoke", before_send)
    with mock.patch("botocore.auth.get_current_datetime", return_value=FIXED_NOW):
        try:
            client.invoke(FunctionName=FUNCTION_ARN, Qualifier="$LATEST", Payload=BODY, LogType="Tail")
        except Captured:
            pass
    request = seen["request"]
    assert request.url == f"http://{HOST}{PATH}?{QUERY}", request.url
    write_fixture("botocore-client-invoke.http", request.method, request.url, request.headers, request.body)


if __name__ == "__main__":
    print(f"botocore {botocore.__version__}")
    capture_sigv4auth()
    capture_client()
