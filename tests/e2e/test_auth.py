"""Request authentication (SigV4 against configured access keys), accounts in ARNs, and the
credentials a first start generates."""

from __future__ import annotations

import configparser
import datetime
import http.client
import json
import os
import socket
import stat
import time
import urllib.request
from unittest import mock

import pytest
from botocore.exceptions import ClientError

from helpers import ACCOUNT, REGION, ROLE, error_code, error_status, python_zip

LIST = "/2015-03-31/functions"


def assert_auth_error(resp, error_type):
    assert resp.status == 403, (resp.status, resp.body[:300])
    assert resp.error_type is not None, resp.headers
    assert resp.error_type.split(":")[0] == error_type
    body = resp.json()
    assert body.get("message") or body.get("Message"), body


def test_unsigned_request_is_403_missing_authentication_token(server):
    resp = server.raw("GET", LIST, sign=False)
    assert_auth_error(resp, "MissingAuthenticationTokenException")
    resp = server.raw("POST", f"{LIST}/anything/invocations", b"{}", sign=False)
    assert_auth_error(resp, "MissingAuthenticationTokenException")


def test_wrong_secret_is_403_invalid_signature(server):
    resp = server.raw("GET", LIST, secret="not-the-secret")
    assert_auth_error(resp, "InvalidSignatureException")
    with pytest.raises(ClientError) as exc:
        server.client("lambda", secret="not-the-secret").list_functions()
    assert error_status(exc.value) == 403
    assert error_code(exc.value) == "InvalidSignatureException"


def test_unknown_access_key_is_403_unrecognized_client(server):
    resp = server.raw("GET", LIST, key="AKIDUNKNOWN", secret="whatever")
    assert_auth_error(resp, "UnrecognizedClientException")
    with pytest.raises(ClientError) as exc:
        server.client("lambda", key="AKIDUNKNOWN", secret="whatever").list_functions()
    assert error_status(exc.value) == 403
    assert error_code(exc.value) == "UnrecognizedClientException"


def test_expired_signature_is_403(server):
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=past):
        resp = server.raw("GET", LIST)
    assert_auth_error(resp, "InvalidSignatureException")
    assert "expired" in (resp.error_message() or "").lower(), resp.body


def test_signature_from_the_future_is_403(server):
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=future):
        resp = server.raw("GET", LIST)
    assert resp.status == 403, resp.body


def test_tampered_body_is_403_invalid_signature(server, basic_functions):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from helpers import http_request

    name = basic_functions("python3.11")
    path = f"/2015-03-31/functions/{name}/invocations"
    request = AWSRequest(method="POST", url=server.endpoint + path, data=b'{"echo": 1}')
    SigV4Auth(Credentials("testing", "testing"), "lambda", REGION).add_auth(request)
    prepared = request.prepare()
    resp = http_request(server.endpoint, "POST", path, b'{"echo": 2}', dict(prepared.headers))
    assert_auth_error(resp, "InvalidSignatureException")


@pytest.mark.parametrize("key, error_type", [
    (None, "MissingAuthenticationTokenException"),
    ("AKIDUNKNOWN", "UnrecognizedClientException"),
])
def test_unauthenticated_upload_is_refused_before_its_body_arrives(server, key, error_type):
    """A CreateFunction that declares 60 MB but sends 4 KB is answered at once: the server
    must not wait for (or buffer) a body it cannot authenticate."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {"Host": f"127.0.0.1:{server.port}", "Content-Type": "application/json"}
    if key:
        request = AWSRequest(method="POST", url=server.endpoint + LIST, headers=headers)
        SigV4Auth(Credentials(key, "whatever"), "lambda", REGION).add_auth(request)
        headers = dict(request.headers.items())
    headers["Content-Length"] = "60000000"
    head = f"POST {LIST} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b"\r\n" + b'{"FunctionName": "' + b"x" * 4096)
        # Nothing more is sent: a server waiting for the body times this read out.
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        elapsed = time.monotonic() - started

    assert resp.status == 403, (resp.status, body[:300])
    assert resp.getheader("x-amzn-errortype") == error_type
    assert json.loads(body)["message"], body
    assert elapsed < 5, f"answered after {elapsed:.1f} s"

    with urllib.request.urlopen(server.endpoint + "/nimbus/health", timeout=5) as health:
        assert health.status == 200
    assert "Functions" in server.lam.list_functions()


def test_signed_requests_with_any_region_and_quoted_arns_are_accepted(server, basic_functions):
    """The credential scope's region is the client's; ARNs in paths arrive percent-encoded."""
    name = basic_functions("python3.11")
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    cfg = server.lam.get_function_configuration(FunctionName=arn)
    assert cfg["FunctionName"] == name
    resp = server.lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=b'{"echo": 1}')
    assert resp["StatusCode"] == 200


def test_account_id_appears_in_every_arn(server, basic_functions):
    name = basic_functions("python3.11")
    expected = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    assert server.lam.get_function_configuration(FunctionName=name)["FunctionArn"] == expected
    assert server.lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"] == expected
    listed = [f for f in server.lam.list_functions()["Functions"] if f["FunctionName"] == name]
    assert listed and listed[0]["FunctionArn"] == expected
    assert server.invoke(name, {"echo": 1}).json()["invoked_function_arn"] == expected


def test_access_keys_from_env_with_several_accounts(make_server):
    s = make_server(access_key=False, env={
        "NIMBUS_ACCESS_KEYS": f"testing:testing:{ACCOUNT},other:othersecret:210987654321",
    })
    first = s.create_function("acct-a", "python3.11")
    other = s.client("lambda", key="other", secret="othersecret")
    second = s.create_function("acct-b", "python3.11", client=other)

    assert s.lam.get_function_configuration(FunctionName=first)["FunctionArn"] == \
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{first}"
    cfg = other.get_function_configuration(FunctionName=second)
    assert cfg["FunctionArn"] == f"arn:aws:lambda:{REGION}:210987654321:function:{second}"
    ctx = s.invoke(second, {"echo": 1}, client=other).json()
    assert ctx["invoked_function_arn"] == cfg["FunctionArn"]

    # accounts do not see each other's functions
    assert [f["FunctionName"] for f in s.lam.list_functions()["Functions"]] == [first]
    assert [f["FunctionName"] for f in other.list_functions()["Functions"]] == [second]
    with pytest.raises(ClientError) as exc:
        other.get_function(FunctionName=first)
    assert error_code(exc.value) == "ResourceNotFoundException"


def read_generated_credentials(data_dir):
    creds = configparser.ConfigParser()
    assert creds.read(os.path.join(data_dir, "credentials")), "no DIR/credentials"
    key = creds["default"]["aws_access_key_id"]
    secret = creds["default"]["aws_secret_access_key"]
    config = configparser.ConfigParser()
    assert config.read(os.path.join(data_dir, "config")), "no DIR/config"
    assert config["default"]["region"] == REGION
    return key, secret


def test_first_start_generates_credentials_that_the_aws_cli_uses(make_server):
    s = make_server(access_key=False)
    key, secret = read_generated_credentials(s.data_dir)
    assert key and secret and key != "testing"

    cli_env = {
        "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_DEFAULT_REGION": None,
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(s.data_dir, "credentials"),
        "AWS_CONFIG_FILE": os.path.join(s.data_dir, "config"),
    }
    rc, out, err = s.aws("lambda", "list-functions", env=cli_env)
    assert rc == 0, err
    assert json.loads(out)["Functions"] == []

    client = s.client("lambda", key=key, secret=secret)
    client.create_function(FunctionName="generated-key-fn", Runtime="python3.11", Role=ROLE,
                           Handler="app.handler", Code={"ZipFile": python_zip()})
    s.names.add("generated-key-fn")

    # the default key is enforced: others are rejected
    with pytest.raises(ClientError) as exc:
        s.lam.list_functions()  # testing:testing is not configured here
    assert error_status(exc.value) == 403

    s.restart()
    assert read_generated_credentials(s.data_dir) == (key, secret), "restart reuses the key"
    client = s.client("lambda", key=key, secret=secret)
    assert [f["FunctionName"] for f in client.list_functions()["Functions"]] == \
        ["generated-key-fn"]
    rc, out, err = s.aws("lambda", "get-function", "--function-name", "generated-key-fn",
                         env=cli_env)
    assert rc == 0, err


def test_generated_credentials_file_is_private_and_announced(make_server):
    s = make_server(access_key=False)
    path = os.path.join(s.data_dir, "credentials")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & 0o077 == 0, f"credentials file is readable by others: {oct(mode)}"
    assert path in open(s.log_path, errors="replace").read(), \
        "the server tells the user where the generated credentials are"
