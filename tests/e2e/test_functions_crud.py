"""Function CRUD through the Lambda control-plane API: the AWS CLI, boto3 and raw requests."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import struct
import urllib.request
import uuid
import zipfile
from functools import lru_cache
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from helpers import (
    ACCOUNT, HANDLERS, LAST_MODIFIED_RE, REGION, ROLE, code_zip, error_code, error_status,
    python_zip, rust_zip, sha256_b64, zip_files,
)

CLI_RUNTIMES = ["python3.11", "nodejs20.x", "provided.al2023", "provided.al2"]


def arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def create_body(name: str, runtime="python3.11", handler="app.handler", zip_bytes=None, **kw):
    body = {
        "FunctionName": name,
        "Runtime": runtime,
        "Role": ROLE,
        "Handler": handler,
        "Code": {"ZipFile": base64.b64encode(zip_bytes or python_zip()).decode()},
    }
    body.update(kw)
    return body


def assert_error(resp, status: int, error_type: str, member: str = "message"):
    assert resp.status == status, (resp.status, resp.body[:500])
    assert resp.error_type is not None, f"no x-amzn-ErrorType header: {resp.headers}"
    assert resp.error_type.split(":")[0] == error_type, resp.error_type
    assert resp.headers.get("x-amzn-requestid"), "every response carries x-amzn-RequestId"
    body = resp.json()
    assert isinstance(body.get(member), str) and body[member], f"no {member!r} member: {body}"
    assert body.get("Type") == "User", body


# --------------------------------------------------------------------------------------
# create


@pytest.mark.parametrize("runtime", CLI_RUNTIMES)
def test_create_function_with_aws_cli_zip_file_then_invoke(server, runtime, tmp_path):
    zip_bytes = code_zip(runtime)
    zip_path = tmp_path / "function.zip"
    zip_path.write_bytes(zip_bytes)
    name = server.name("cli-" + runtime.replace(".", ""))
    rc, out, err = server.aws(
        "lambda", "create-function", "--function-name", name, "--runtime", runtime,
        "--handler", HANDLERS[runtime], "--role", ROLE, "--zip-file", f"fileb://{zip_path}",
    )
    assert rc == 0, err
    cfg = json.loads(out)
    assert cfg["FunctionName"] == name
    assert cfg["FunctionArn"] == arn(name)
    assert cfg["Runtime"] == runtime
    assert cfg["Handler"] == HANDLERS[runtime]
    assert cfg["CodeSha256"] == sha256_b64(zip_bytes)
    assert cfg["CodeSize"] == len(zip_bytes)
    assert cfg["Version"] == "$LATEST"

    rc, out, err = server.aws("lambda", "wait", "function-active-v2", "--function-name", name)
    assert rc == 0, err

    outfile = tmp_path / "out.json"
    rc, out, err = server.aws(
        "lambda", "invoke", "--function-name", name, "--payload", '{"echo": "via-cli"}',
        str(outfile),
    )
    assert rc == 0, err
    meta = json.loads(out)
    assert meta["StatusCode"] == 200
    assert "FunctionError" not in meta, outfile.read_text()
    assert json.loads(outfile.read_text())["echo"] == "via-cli"


@pytest.mark.parametrize("runtime", CLI_RUNTIMES)
def test_create_function_with_boto3_returns_its_configuration(server, runtime):
    zip_bytes = code_zip(runtime)
    name = server.name("boto-" + runtime.replace(".", ""))
    cfg = server.lam.create_function(
        FunctionName=name, Runtime=runtime, Role=ROLE, Handler=HANDLERS[runtime],
        Code={"ZipFile": zip_bytes},
    )
    assert cfg["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert cfg["FunctionName"] == name
    assert cfg["FunctionArn"] == arn(name)
    assert cfg["Runtime"] == runtime
    assert cfg["Role"] == ROLE
    assert cfg["Handler"] == HANDLERS[runtime]
    assert cfg["CodeSize"] == len(zip_bytes)
    assert cfg["CodeSha256"] == sha256_b64(zip_bytes)
    assert cfg["Description"] == ""
    assert cfg["Timeout"] == 3
    assert cfg["MemorySize"] == 128
    assert re.fullmatch(LAST_MODIFIED_RE, cfg["LastModified"]), cfg["LastModified"]
    assert cfg["Version"] == "$LATEST"
    assert cfg["RevisionId"]
    assert cfg["State"] in ("Pending", "Active")
    assert cfg["PackageType"] == "Zip"
    assert cfg["Architectures"] == ["x86_64"]

    server.wait_active(name)
    inv = server.invoke(name, {"echo": [1, 2, 3]})
    assert inv.function_error is None, inv.payload
    assert inv.json()["echo"] == [1, 2, 3]


def test_create_with_all_settings_is_reflected_in_the_configuration(server):
    name = server.name("settings")
    cfg = server.lam.create_function(
        FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
        Code={"ZipFile": python_zip()}, Description="a test function", Timeout=42,
        MemorySize=1024, Environment={"Variables": {"K1": "v1", "K2": "v2"}},
    )
    assert cfg["Description"] == "a test function"
    assert cfg["Timeout"] == 42
    assert cfg["MemorySize"] == 1024
    assert cfg["Environment"]["Variables"] == {"K1": "v1", "K2": "v2"}


# --------------------------------------------------------------------------------------
# read


@pytest.fixture(scope="module")
def python_function(server):
    zip_bytes = python_zip()
    name = server.create_function("get", "python3.11", zip_bytes, Description="desc")
    return name, zip_bytes


def test_get_function_returns_configuration_and_code_location(server, python_function):
    name, zip_bytes = python_function
    resp = server.lam.get_function(FunctionName=name)
    cfg = resp["Configuration"]
    assert cfg["FunctionName"] == name
    assert cfg["FunctionArn"] == arn(name)
    assert cfg["CodeSha256"] == sha256_b64(zip_bytes)
    assert cfg["CodeSize"] == len(zip_bytes)
    assert cfg["Description"] == "desc"
    assert cfg["State"] == "Active"
    assert cfg["LastUpdateStatus"] == "Successful"
    assert resp["Code"]["RepositoryType"] == "S3"
    assert resp["Code"]["Location"].startswith("http")


def test_get_function_code_location_downloads_the_zip(server, python_function):
    name, zip_bytes = python_function
    location = server.lam.get_function(FunctionName=name)["Code"]["Location"]
    with urllib.request.urlopen(location, timeout=30) as r:
        assert r.status == 200
        assert r.read() == zip_bytes


def test_get_function_configuration_matches_get_function(server, python_function):
    name, _ = python_function
    cfg = server.lam.get_function_configuration(FunctionName=name)
    cfg.pop("ResponseMetadata")
    assert cfg == server.lam.get_function(FunctionName=name)["Configuration"]


def test_functions_are_addressable_by_name_partial_arn_and_full_arn(server, python_function):
    name, _ = python_function
    for ident in (name, f"{ACCOUNT}:function:{name}", arn(name), f"{arn(name)}:$LATEST"):
        cfg = server.lam.get_function_configuration(FunctionName=ident)
        assert cfg["FunctionName"] == name, ident
        inv = server.invoke(ident, {"echo": ident})
        assert inv.function_error is None, (ident, inv.payload)
        assert inv.json()["echo"] == ident


def test_aws_cli_get_function_and_get_function_configuration(server, python_function):
    name, zip_bytes = python_function
    rc, out, err = server.aws("lambda", "get-function", "--function-name", name)
    assert rc == 0, err
    assert json.loads(out)["Configuration"]["CodeSha256"] == sha256_b64(zip_bytes)
    rc, out, err = server.aws("lambda", "get-function-configuration", "--function-name", name)
    assert rc == 0, err
    assert json.loads(out)["FunctionArn"] == arn(name)


def test_list_functions_paginates_with_max_items_and_marker(server):
    prefix = "page-" + uuid.uuid4().hex[:6]
    zip_bytes = python_zip()
    names = {server.create_function(prefix, "python3.11", zip_bytes) for _ in range(5)}

    seen, marker, pages = [], None, 0
    while True:
        kw = {"MaxItems": 2}
        if marker:
            kw["Marker"] = marker
        page = server.lam.list_functions(**kw)
        pages += 1
        assert len(page["Functions"]) <= 2
        seen += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
        assert pages < 1000
    ours = [n for n in seen if n in names]
    assert sorted(ours) == sorted(names), "each function exactly once across the pages"
    assert len(seen) == len(set(seen)), "no function on two pages"

    item = next(f for f in server.lam.list_functions()["Functions"] if f["FunctionName"] in names)
    assert item["FunctionArn"] == arn(item["FunctionName"])
    assert item["Runtime"] == "python3.11"
    assert item["CodeSha256"] == sha256_b64(zip_bytes)

    paginated = []
    for page in server.lam.get_paginator("list_functions").paginate(
        PaginationConfig={"PageSize": 2}
    ):
        paginated += [f["FunctionName"] for f in page["Functions"]]
    assert names <= set(paginated)

    rc, out, err = server.aws("lambda", "list-functions")
    assert rc == 0, err
    assert names <= {f["FunctionName"] for f in json.loads(out)["Functions"]}

    # the CLI's own pagination (--max-items / --starting-token wrap Marker / NextMarker)
    cli_seen, token = [], None
    for _ in range(1000):
        args = ["lambda", "list-functions", "--max-items", "3"]
        if token:
            args += ["--starting-token", token]
        rc, out, err = server.aws(*args)
        assert rc == 0, err
        page = json.loads(out)
        assert len(page["Functions"]) <= 3
        cli_seen += [f["FunctionName"] for f in page["Functions"]]
        token = page.get("NextToken")
        if not token:
            break
    assert names <= set(cli_seen)
    assert len(cli_seen) == len(set(cli_seen))


# --------------------------------------------------------------------------------------
# update


def versioned_python(version: int) -> bytes:
    return zip_files({"app.py": f"def handler(event, context):\n    return {{'version': {version}}}\n"})


def test_update_function_code_changes_code_sha_and_runs_the_new_code(server, tmp_path):
    v1 = versioned_python(1)
    name = server.create_function("code", "python3.11", v1)
    before = server.lam.get_function_configuration(FunctionName=name)
    assert server.invoke(name, {}).json() == {"version": 1}  # leaves a warm environment

    v2 = versioned_python(2)
    cfg = server.lam.update_function_code(FunctionName=name, ZipFile=v2)
    assert cfg["CodeSha256"] == sha256_b64(v2) != before["CodeSha256"]
    assert cfg["CodeSize"] == len(v2)
    assert cfg["RevisionId"] != before["RevisionId"]
    assert cfg["LastModified"] >= before["LastModified"]
    server.wait_active(name)
    assert server.invoke(name, {}).json() == {"version": 2}

    v3 = versioned_python(3)
    (tmp_path / "v3.zip").write_bytes(v3)
    rc, out, err = server.aws(
        "lambda", "update-function-code", "--function-name", name,
        "--zip-file", f"fileb://{tmp_path / 'v3.zip'}",
    )
    assert rc == 0, err
    assert json.loads(out)["CodeSha256"] == sha256_b64(v3)
    server.wait_active(name)
    assert server.invoke(name, {}).json() == {"version": 3}
    assert server.lam.get_function_configuration(FunctionName=name)["CodeSha256"] == sha256_b64(v3)


def test_update_function_configuration_changes_memory_timeout_and_description(server):
    name = server.create_function("conf", "python3.11")
    first = server.invoke(name, {"echo": 1}).json()  # warm environment with the old settings
    assert int(first["memory_limit_in_mb"]) == 128

    cfg = server.lam.update_function_configuration(
        FunctionName=name, MemorySize=512, Timeout=7, Description="updated"
    )
    assert (cfg["MemorySize"], cfg["Timeout"], cfg["Description"]) == (512, 7, "updated")
    server.wait_active(name)
    got = server.lam.get_function_configuration(FunctionName=name)
    assert (got["MemorySize"], got["Timeout"], got["Description"]) == (512, 7, "updated")

    echo = server.invoke(name, {"echo": 2}).json()
    assert int(echo["memory_limit_in_mb"]) == 512, "new invocations must see the new config"
    assert 5000 < echo["remaining_time_ms"] <= 7000


def test_update_function_configuration_replaces_environment_variables_wholesale(server):
    name = server.create_function(
        "envs", "python3.11", Environment={"Variables": {"VAR_A": "1", "VAR_B": "2"}}
    )
    env = server.invoke(name, {"env": True}).json()
    assert (env.get("VAR_A"), env.get("VAR_B")) == ("1", "2")

    cfg = server.lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"VAR_C": "3"}}
    )
    assert cfg["Environment"]["Variables"] == {"VAR_C": "3"}
    server.wait_active(name)
    env = server.invoke(name, {"env": True}).json()
    assert env.get("VAR_C") == "3"
    assert "VAR_A" not in env and "VAR_B" not in env


def test_update_function_configuration_changes_the_handler(server):
    name = server.create_function("handler", "python3.11")
    assert server.invoke(name, {"echo": "x"}).json()["echo"] == "x"
    cfg = server.lam.update_function_configuration(FunctionName=name, Handler="app.hello")
    assert cfg["Handler"] == "app.hello"
    server.wait_active(name)
    assert server.invoke(name, {"name": "nimbus"}).json() == "Hello, nimbus!"


def test_update_function_configuration_changes_the_runtime(server):
    both = zip_files({
        "index.py": "def handler(event, context):\n    return {'lang': 'python'}\n",
        "index.js": "exports.handler = async () => ({ lang: 'node' });\n",
    })
    name = server.create_function("runtime", "python3.11", both, handler="index.handler")
    assert server.invoke(name, {}).json() == {"lang": "python"}
    cfg = server.lam.update_function_configuration(FunctionName=name, Runtime="nodejs20.x")
    assert cfg["Runtime"] == "nodejs20.x"
    server.wait_active(name)
    assert server.invoke(name, {}).json() == {"lang": "node"}


def test_aws_cli_update_function_configuration(server):
    name = server.create_function("cliconf", "python3.11")
    rc, out, err = server.aws(
        "lambda", "update-function-configuration", "--function-name", name,
        "--memory-size", "256", "--timeout", "9", "--environment", "Variables={XY=z}",
    )
    assert rc == 0, err
    cfg = json.loads(out)
    assert (cfg["MemorySize"], cfg["Timeout"]) == (256, 9)
    assert cfg["Environment"]["Variables"] == {"XY": "z"}


def test_revision_id_changes_on_every_update(server):
    name = server.create_function("rev", "python3.11")
    revisions = [server.lam.get_function_configuration(FunctionName=name)["RevisionId"]]
    revisions.append(server.lam.update_function_configuration(
        FunctionName=name, Description="one")["RevisionId"])
    server.wait_active(name)
    revisions.append(server.lam.update_function_code(
        FunctionName=name, ZipFile=versioned_python(9))["RevisionId"])
    server.wait_active(name)
    revisions.append(server.lam.get_function_configuration(FunctionName=name)["RevisionId"])
    assert len(set(revisions[:3])) == 3, revisions
    assert revisions[3] == revisions[2], "a read does not change the revision"


def test_stale_revision_id_is_rejected_with_412_precondition_failed(server):
    name = server.create_function("precond", "python3.11")
    current = server.lam.get_function_configuration(FunctionName=name)["RevisionId"]

    with pytest.raises(ClientError) as exc:
        server.lam.update_function_configuration(
            FunctionName=name, Description="nope", RevisionId=str(uuid.uuid4())
        )
    assert error_status(exc.value) == 412
    assert error_code(exc.value) == "PreconditionFailedException"
    cfg = server.lam.get_function_configuration(FunctionName=name)
    assert cfg["Description"] == "" and cfg["RevisionId"] == current, "nothing changed"

    resp = server.raw(
        "PUT", f"/2015-03-31/functions/{name}/configuration",
        {"Description": "nope", "RevisionId": "0" * 8 + "-0000-0000-0000-" + "0" * 12},
    )
    assert_error(resp, 412, "PreconditionFailedException", "message")

    updated = server.lam.update_function_configuration(
        FunctionName=name, Description="yes", RevisionId=current
    )
    assert updated["Description"] == "yes"
    server.wait_active(name)

    with pytest.raises(ClientError) as exc:
        server.lam.update_function_code(
            FunctionName=name, ZipFile=versioned_python(2), RevisionId=current  # now stale
        )
    assert error_status(exc.value) == 412
    assert error_code(exc.value) == "PreconditionFailedException"
    new = server.lam.update_function_code(
        FunctionName=name, ZipFile=versioned_python(2), RevisionId=updated["RevisionId"]
    )
    assert new["CodeSha256"] == sha256_b64(versioned_python(2))


# --------------------------------------------------------------------------------------
# delete


def test_delete_function_removes_it(server):
    name = server.create_function("del", "python3.11")
    resp = server.lam.delete_function(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
    for call in (
        lambda: server.lam.get_function(FunctionName=name),
        lambda: server.lam.get_function_configuration(FunctionName=name),
        lambda: server.lam.invoke(FunctionName=name, Payload=b"{}"),
        lambda: server.lam.delete_function(FunctionName=name),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_status(exc.value) == 404
        assert error_code(exc.value) == "ResourceNotFoundException"
    assert name not in [f["FunctionName"] for f in server.lam.list_functions()["Functions"]]
    # the name can be used again
    server.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                               Handler="app.handler", Code={"ZipFile": python_zip()})
    server.wait_active(name)
    assert server.invoke(name, {"echo": "again"}).json()["echo"] == "again"


def test_aws_cli_delete_function(server):
    name = server.create_function("clidel", "python3.11")
    rc, out, err = server.aws("lambda", "delete-function", "--function-name", name)
    assert rc == 0, err
    rc, out, err = server.aws("lambda", "get-function", "--function-name", name)
    assert rc != 0
    assert "ResourceNotFoundException" in err


# --------------------------------------------------------------------------------------
# account settings


def test_get_account_settings_reports_limits_and_usage(make_server):
    s = make_server()
    zips = [python_zip(), rust_zip()]
    s.create_function("acct", "python3.11", zips[0])
    s.create_function("acct", "provided.al2023", zips[1])
    settings = s.lam.get_account_settings()
    limit, usage = settings["AccountLimit"], settings["AccountUsage"]
    assert limit["ConcurrentExecutions"] == 1000
    assert limit["UnreservedConcurrentExecutions"] == 1000
    assert limit["CodeSizeUnzipped"] == 262144000
    assert limit["CodeSizeZipped"] == 52428800
    assert limit["TotalCodeSize"] == 80530636800
    assert usage["FunctionCount"] == 2
    assert usage["TotalCodeSize"] == sum(len(z) for z in zips)

    rc, out, err = s.aws("lambda", "get-account-settings")
    assert rc == 0, err
    assert json.loads(out)["AccountUsage"]["FunctionCount"] == 2


# --------------------------------------------------------------------------------------
# errors


def test_unknown_function_is_404_resource_not_found(server):
    missing = server.name("missing")
    resp = server.raw("GET", f"/2015-03-31/functions/{missing}")
    assert_error(resp, 404, "ResourceNotFoundException", "Message")
    assert resp.headers.get("x-amzn-requestid")
    assert resp.headers.get("content-type", "").startswith("application/json")

    calls = {
        "get_function": dict(FunctionName=missing),
        "get_function_configuration": dict(FunctionName=missing),
        "update_function_code": dict(FunctionName=missing, ZipFile=python_zip()),
        "update_function_configuration": dict(FunctionName=missing, Timeout=5),
        "delete_function": dict(FunctionName=missing),
        "invoke": dict(FunctionName=missing, Payload=b"{}"),
    }
    for op, kw in calls.items():
        with pytest.raises(ClientError) as exc:
            getattr(server.lam, op)(**kw)
        assert error_status(exc.value) == 404, op
        assert error_code(exc.value) == "ResourceNotFoundException", op
        assert exc.value.response["Error"]["Message"], op

    rc, out, err = server.aws("lambda", "get-function-configuration", "--function-name", missing)
    assert rc != 0
    assert "ResourceNotFoundException" in err


def test_duplicate_create_is_409_resource_conflict(server, tmp_path):
    name = server.create_function("dup", "python3.11")
    with pytest.raises(ClientError) as exc:
        server.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                                   Handler="app.handler", Code={"ZipFile": python_zip()})
    assert error_status(exc.value) == 409
    assert error_code(exc.value) == "ResourceConflictException"

    resp = server.raw("POST", "/2015-03-31/functions", create_body(name))
    assert_error(resp, 409, "ResourceConflictException", "message")

    (tmp_path / "f.zip").write_bytes(python_zip())
    rc, out, err = server.aws(
        "lambda", "create-function", "--function-name", name, "--runtime", "python3.11",
        "--handler", "app.handler", "--role", ROLE, "--zip-file", f"fileb://{tmp_path / 'f.zip'}",
    )
    assert rc != 0
    assert "ResourceConflictException" in err


BAD_CREATES = {
    "runtime-unknown": {"Runtime": "cobol85"},
    "runtime-empty": {"Runtime": ""},
    "handler-with-space": {"Handler": "app handler"},
    "handler-too-long": {"Handler": "a." + "h" * 127},
    "handler-empty": {"Handler": ""},
    "memory-too-small": {"MemorySize": 64},
    "memory-too-large": {"MemorySize": 10241},
    "timeout-zero": {"Timeout": 0},
    "timeout-too-large": {"Timeout": 901},
    "name-with-space": {"FunctionName": "bad name"},
    "name-with-dot": {"FunctionName": "bad.name"},
    "name-too-long": {"FunctionName": "n" * 65},
}


@pytest.mark.parametrize("case", list(BAD_CREATES))
def test_create_with_invalid_parameter_is_400_invalid_parameter_value(server, case):
    name = server.name("bad")
    body = create_body(name)
    body.update(BAD_CREATES[case])
    resp = server.raw("POST", "/2015-03-31/functions", body)
    assert_error(resp, 400, "InvalidParameterValueException", "message")
    with pytest.raises(ClientError) as exc:
        server.lam.get_function(FunctionName=name)
    assert error_code(exc.value) == "ResourceNotFoundException", "nothing was created"


@pytest.mark.parametrize("change", [
    {"MemorySize": 64}, {"MemorySize": 10241}, {"Timeout": 0}, {"Timeout": 901},
    {"Runtime": "cobol85"}, {"Handler": "has space"},
], ids=["memory-small", "memory-large", "timeout-zero", "timeout-large", "runtime", "handler"])
def test_update_configuration_with_invalid_parameter_is_400(server, python_function, change):
    name, _ = python_function
    before = server.lam.get_function_configuration(FunctionName=name)
    resp = server.raw("PUT", f"/2015-03-31/functions/{name}/configuration", change)
    assert_error(resp, 400, "InvalidParameterValueException", "message")
    after = server.lam.get_function_configuration(FunctionName=name)
    assert after["RevisionId"] == before["RevisionId"]


def test_boto3_surfaces_invalid_runtime_as_invalid_parameter_value(server):
    with pytest.raises(ClientError) as exc:
        server.lam.create_function(FunctionName=server.name("badrt"), Runtime="cobol85",
                                   Role=ROLE, Handler="app.handler",
                                   Code={"ZipFile": python_zip()})
    assert error_status(exc.value) == 400
    assert error_code(exc.value) == "InvalidParameterValueException"


@pytest.mark.parametrize("method,path_fmt", [
    ("POST", "/2015-03-31/functions"),
    ("PUT", "/2015-03-31/functions/{name}/configuration"),
    ("PUT", "/2015-03-31/functions/{name}/code"),
])
def test_unparseable_json_is_400_invalid_request_content(server, python_function, method,
                                                         path_fmt):
    name, _ = python_function
    resp = server.raw(method, path_fmt.format(name=name), b'{"FunctionName": "x", ',
                      {"Content-Type": "application/json"})
    assert_error(resp, 400, "InvalidRequestContentException", "message")


def test_unknown_operation_gets_a_json_error(server):
    resp = server.raw("GET", "/2015-03-31/no-such-operation")
    assert 400 <= resp.status < 500, resp.status
    assert resp.error_type, resp.headers
    body = resp.json()
    assert body.get("message") or body.get("Message"), body


# --------------------------------------------------------------------------------------
# bad zips


BOMB_ENTRIES, BOMB_ENTRY_SIZE = 10, 30 << 20  # 300 MiB unpacked, > 250 MB


@lru_cache(maxsize=None)
def zip_bomb() -> bytes:
    buf = io.BytesIO()
    chunk = b"\0" * (1 << 20)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("app.py", "def handler(e, c):\n    return 1\n")
        for i in range(BOMB_ENTRIES):
            with zf.open(f"zeros-{i}.bin", "w") as f:
                for _ in range(BOMB_ENTRY_SIZE >> 20):
                    f.write(chunk)
    return buf.getvalue()


@lru_cache(maxsize=None)
def lying_zip_bomb() -> bytes:
    """One 300 MiB entry whose headers claim it unpacks to 1000 bytes."""
    buf = io.BytesIO()
    chunk = b"\0" * (1 << 20)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("app.py", "def handler(e, c):\n    return 1\n")
        with zf.open("zeros.bin", "w", force_zip64=False) as f:
            for _ in range(300):
                f.write(chunk)
    data = bytearray(buf.getvalue())
    # local header: signature PK\3\4, uncompressed size at offset 22
    local = data.rfind(b"PK\x03\x04", 0, data.find(b"zeros.bin"))
    struct.pack_into("<I", data, local + 22, 1000)
    # central directory entry: signature PK\1\2, uncompressed size at offset 24
    cd_name = data.rfind(b"zeros.bin")
    central = data.rfind(b"PK\x01\x02", 0, cd_name)
    struct.pack_into("<I", data, central + 24, 1000)
    # data descriptor (if any) follows the data: signature PK\7\8, crc, csize, usize
    dd = data.find(b"PK\x07\x08", local)
    if 0 <= dd < central:
        struct.pack_into("<I", data, dd + 12, 1000)
    return bytes(data)


def escape_target() -> Path:
    return Path("/tmp") / f"nimbus-e2e-escape-{uuid.uuid4().hex}"


def bad_zip(kind: str, target: Path) -> bytes:
    if kind == "corrupt":
        return b"PK\x03\x04 this is not really a zip archive" + os.urandom(64)
    if kind == "truncated":
        good = python_zip()
        return good[: len(good) // 2]
    if kind == "dotdot-path":
        depth = "../" * 12
        return zip_files({"app.py": "x = 1\n", f"{depth}{str(target).lstrip('/')}": "escaped\n"})
    if kind == "absolute-path":
        return zip_files({"app.py": "x = 1\n", str(target): "escaped\n"})
    if kind == "bomb":
        return zip_bomb()
    if kind == "lying-bomb":
        return lying_zip_bomb()
    raise ValueError(kind)


BAD_ZIPS = ["corrupt", "truncated", "dotdot-path", "absolute-path", "bomb", "lying-bomb"]


def data_dir_snapshot(data_dir: str):
    files, total = set(), 0
    for root, _, names in os.walk(data_dir):
        for n in names:
            p = os.path.join(root, n)
            try:
                total += os.path.getsize(p)
            except OSError:
                continue
            if not n.endswith(("-wal", "-shm", "-journal")):
                files.add(os.path.relpath(p, data_dir))
    return files, total


@pytest.fixture(scope="module")
def zip_server(make_module_server):
    s = make_module_server()
    s.create_function("existing", "python3.11", versioned_python(1))
    return s


@pytest.mark.parametrize("kind", BAD_ZIPS)
def test_bad_zip_is_rejected_on_create_and_nothing_is_written(zip_server, kind):
    s = zip_server
    target = escape_target()
    zip_bytes = bad_zip(kind, target)
    name = s.name("zip")
    before_files, before_size = data_dir_snapshot(s.data_dir)

    resp = s.raw("POST", "/2015-03-31/functions", create_body(name, zip_bytes=zip_bytes))
    assert_error(resp, 400, "InvalidParameterValueException", "message")

    assert not target.exists(), f"the zip wrote outside its root: {target}"
    after_files, after_size = data_dir_snapshot(s.data_dir)
    assert after_files - before_files == set(), "a rejected create left files behind"
    assert after_size - before_size < (1 << 20), "a rejected create left data behind"
    with pytest.raises(ClientError) as exc:
        s.lam.get_function(FunctionName=name)
    assert error_code(exc.value) == "ResourceNotFoundException"
    # the name is still free
    s.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                          Handler="app.handler", Code={"ZipFile": versioned_python(7)})
    s.wait_active(name)
    assert s.invoke(name, {}).json() == {"version": 7}


@pytest.mark.parametrize("kind", BAD_ZIPS)
def test_bad_zip_is_rejected_on_update_and_the_old_code_stays(zip_server, kind):
    s = zip_server
    name = next(n for n in s.names if n.startswith("existing-"))
    before = s.lam.get_function_configuration(FunctionName=name)
    target = escape_target()
    zip_bytes = bad_zip(kind, target)
    body = {"ZipFile": base64.b64encode(zip_bytes).decode()}
    resp = s.raw("PUT", f"/2015-03-31/functions/{name}/code", body)
    assert_error(resp, 400, "InvalidParameterValueException", "message")
    assert not target.exists(), f"the zip wrote outside its root: {target}"
    after = s.lam.get_function_configuration(FunctionName=name)
    assert after["CodeSha256"] == before["CodeSha256"]
    assert after["RevisionId"] == before["RevisionId"]
    assert s.invoke(name, {}).json() == {"version": 1}


def test_bad_zip_error_with_aws_cli_is_clear(server, tmp_path):
    # (the CLI itself refuses files that are not zips, so send one that escapes its root)
    target = escape_target()
    (tmp_path / "bad.zip").write_bytes(bad_zip("dotdot-path", target))
    rc, out, err = server.aws(
        "lambda", "create-function", "--function-name", server.name("clibad"),
        "--runtime", "python3.11", "--handler", "app.handler", "--role", ROLE,
        "--zip-file", f"fileb://{tmp_path / 'bad.zip'}",
    )
    assert rc != 0
    assert "InvalidParameterValueException" in err
    assert not target.exists()
