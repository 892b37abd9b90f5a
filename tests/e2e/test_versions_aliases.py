"""Versions and aliases (issue 4): PublishVersion, ListVersionsByFunction, invoking by version,
`$LATEST`, alias and qualified ARN, DeleteFunction --qualifier, Create/Get/Update/Delete/
ListAliases, weighted routing, and the validation errors Lambda gives for all of them.

Every operation is driven with boto3 and with the real AWS CLI, against the shared server
(one restart test has a server of its own).
The function under test is tests/e2e/fixtures_issue4/probe, which reports the TAG variable of
its configuration and the code_tag.txt of its package, so each version is recognisable.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from helpers import (
    ACCOUNT,
    REGION,
    ROLE,
    START_RE,
    REPORT_RE,
    error_code,
    error_status,
    report_line_for,
    sha256_b64,
    zip_dir,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures_issue4"
RUNTIME = "python3.11"

# Frontend (model constraint) violations: Lambda answers ValidationException; this project
# reports them as InvalidParameterValueException with Lambda's message text. Both are 400s.
CONSTRAINT_ERRORS = {"ValidationException", "InvalidParameterValueException"}


# --------------------------------------------------------------------------------------
# helpers


def probe_zip(code_tag: str) -> bytes:
    return zip_dir(FIXTURES / "probe", {"code_tag.txt": code_tag})


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def status_of(response: dict) -> int:
    return response["ResponseMetadata"]["HTTPStatusCode"]


def executed_version(inv) -> str:
    return inv.headers["x-amz-executed-version"]


def start_version(inv) -> str:
    """The version written in the START line of the invocation's log tail."""
    for line in inv.log_tail.splitlines():
        m = START_RE.match(line)
        if m:
            return m["version"]
    raise AssertionError(f"no START line in the log tail:\n{inv.log_tail}")


def client_error(fn, *args, **kw) -> ClientError:
    with pytest.raises(ClientError) as exc:
        fn(*args, **kw)
    return exc.value


def assert_cli_error(result, code: str | set):
    rc, out, err = result
    assert rc != 0, f"the CLI succeeded but should have failed: {out}"
    codes = {code} if isinstance(code, str) else code
    assert any(f"({c})" in err for c in codes), err
    return err


def cli_json(result):
    rc, out, err = result
    assert rc == 0, err
    return json.loads(out) if out.strip() else None


def create_probe(server, prefix: str, tag: str = "v1", code_tag: str = "A") -> str:
    return server.create_function(
        prefix, RUNTIME, probe_zip(code_tag), Timeout=30, MemorySize=128,
        Environment={"Variables": {"TAG": tag}},
    )


def set_tag(server, name: str, tag: str):
    server.lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"TAG": tag}})
    server.wait_active(name)


def set_code(server, name: str, code_tag: str):
    server.lam.update_function_code(FunctionName=name, ZipFile=probe_zip(code_tag))
    server.wait_active(name)


def version_numbers(server, name: str) -> list[str]:
    pages = server.lam.get_paginator("list_versions_by_function").paginate(FunctionName=name)
    return [v["Version"] for page in pages for v in page["Versions"]]


@pytest.fixture(scope="module")
def versioned(server):
    """A probe function with versions 1, 2, 3 (TAG v1..v3, code A, B, C) and an unpublished
    $LATEST (TAG v4, code C)."""
    name = create_probe(server, "versioned", "v1", "A")
    assert server.lam.publish_version(FunctionName=name)["Version"] == "1"
    set_code(server, name, "B")
    set_tag(server, name, "v2")
    assert server.lam.publish_version(FunctionName=name)["Version"] == "2"
    set_code(server, name, "C")
    set_tag(server, name, "v3")
    assert server.lam.publish_version(FunctionName=name)["Version"] == "3"
    set_tag(server, name, "v4")
    return name


# --------------------------------------------------------------------------------------
# PublishVersion, ListVersionsByFunction, invoke by version


def test_publish_version_snapshots_code_and_configuration(server):
    name = create_probe(server, "publish", "v1", "A")
    zip_a = probe_zip("A")
    first = server.lam.publish_version(FunctionName=name, Description="first release")
    assert status_of(first) == 201
    assert first["Version"] == "1"
    assert first["FunctionArn"] == arn(name, "1")
    assert first["FunctionName"] == name
    assert first["Description"] == "first release"
    assert first["CodeSha256"] == sha256_b64(zip_a)
    assert first["Environment"]["Variables"] == {"TAG": "v1"}
    assert first["RevisionId"]

    set_code(server, name, "B")
    set_tag(server, name, "v2")
    second = server.lam.publish_version(FunctionName=name)
    assert second["Version"] == "2"
    assert second["CodeSha256"] == sha256_b64(probe_zip("B"))
    set_tag(server, name, "v3")  # $LATEST moves on; the versions must not

    cfg1 = server.lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert cfg1["Version"] == "1"
    assert cfg1["FunctionArn"] == arn(name, "1")
    assert cfg1["Environment"]["Variables"] == {"TAG": "v1"}
    assert cfg1["CodeSha256"] == sha256_b64(zip_a)
    assert cfg1["Description"] == "first release"
    got2 = server.lam.get_function(FunctionName=name, Qualifier="2")
    assert got2["Configuration"]["Version"] == "2"
    assert got2["Configuration"]["Environment"]["Variables"] == {"TAG": "v2"}
    latest = server.lam.get_function_configuration(FunctionName=name)
    assert latest["Version"] == "$LATEST"
    assert latest["Environment"]["Variables"] == {"TAG": "v3"}

    cases = [
        ({"Qualifier": "1"}, "1", ("v1", "A")),
        ({"Qualifier": "2"}, "2", ("v2", "B")),
        ({"Qualifier": "$LATEST"}, "$LATEST", ("v3", "B")),
        ({}, "$LATEST", ("v3", "B")),
    ]
    for kw, version, (tag, code) in cases:
        inv = server.invoke(name, {}, LogType="Tail", **kw)
        assert inv.function_error is None, inv.payload
        body = inv.json()
        assert (body["tag"], body["code_tag"]) == (tag, code), (kw, body)
        assert body["function_version"] == version
        assert executed_version(inv) == version
        assert start_version(inv) == version
        assert f"[{version}]" in body["log_stream_name"]


def test_publishing_unchanged_code_returns_the_existing_version_with_aws_cli(server):
    name = create_probe(server, "unchanged")
    first = cli_json(server.aws("lambda", "publish-version", "--function-name", name))
    assert first["Version"] == "1"
    assert first["FunctionArn"] == arn(name, "1")
    again = cli_json(server.aws("lambda", "publish-version", "--function-name", name,
                                "--description", "nothing changed"))
    assert again["Version"] == "1", "unchanged $LATEST must return the existing version"
    assert again["RevisionId"] == first["RevisionId"]
    # boto3 too
    assert server.lam.publish_version(FunctionName=name)["Version"] == "1"
    assert version_numbers(server, name) == ["$LATEST", "1"]

    set_tag(server, name, "changed")
    assert cli_json(server.aws("lambda", "publish-version", "--function-name", name))[
        "Version"] == "2"
    assert cli_json(server.aws("lambda", "publish-version", "--function-name", name))[
        "Version"] == "2"
    assert version_numbers(server, name) == ["$LATEST", "1", "2"]


def test_publish_flag_of_create_and_update_code_publishes_a_version(server, tmp_path):
    name = server.name("pubflag")
    created = server.lam.create_function(
        FunctionName=name, Runtime=RUNTIME, Role=ROLE, Handler="app.handler",
        Code={"ZipFile": probe_zip("A")}, Environment={"Variables": {"TAG": "v1"}},
        Publish=True)
    assert created["Version"] == "1"
    assert created["FunctionArn"] == arn(name, "1")
    server.wait_active(name)
    updated = server.lam.update_function_code(FunctionName=name, ZipFile=probe_zip("B"),
                                              Publish=True)
    assert updated["Version"] == "2"
    server.wait_active(name)
    (tmp_path / "c.zip").write_bytes(probe_zip("C"))
    cli = cli_json(server.aws("lambda", "update-function-code", "--function-name", name,
                              "--zip-file", f"fileb://{tmp_path / 'c.zip'}", "--publish"))
    assert cli["Version"] == "3"
    server.wait_active(name)
    assert version_numbers(server, name) == ["$LATEST", "1", "2", "3"]
    for version, code in (("1", "A"), ("2", "B"), ("3", "C")):
        inv = server.invoke(name, {}, Qualifier=version)
        assert inv.json()["code_tag"] == code, (version, inv.payload)
        assert executed_version(inv) == version


def test_publish_with_a_stale_code_sha256_is_refused_as_lambda_does(server):
    """Lambda refuses a CodeSha256 that is not $LATEST's with 400 InvalidParameterValueException
    "CodeSHA256 (<given>) is different from current CodeSHA256 in $LATEST (<current>). Please
    try again with the CodeSHA256 in $LATEST." (only a stale RevisionId is a 412)."""
    name = create_probe(server, "sha", "v1", "A")
    old_sha = sha256_b64(probe_zip("A"))
    set_code(server, name, "B")
    new_sha = sha256_b64(probe_zip("B"))

    exc = client_error(server.lam.publish_version, FunctionName=name, CodeSha256=old_sha)
    message = exc.response["Error"]["Message"]
    assert (error_status(exc), error_code(exc)) == (400, "InvalidParameterValueException"), \
        f"Lambda answers 400 InvalidParameterValueException; got {error_status(exc)} " \
        f"{error_code(exc)}: {message}"
    assert "is different from current codesha256 in $latest" in message.lower(), message
    assert old_sha in message and new_sha in message, message
    assert_cli_error(server.aws("lambda", "publish-version", "--function-name", name,
                                "--code-sha256", old_sha), "InvalidParameterValueException")
    assert version_numbers(server, name) == ["$LATEST"], "a failed publish created a version"

    ok = cli_json(server.aws("lambda", "publish-version", "--function-name", name,
                             "--code-sha256", new_sha))
    assert ok["Version"] == "1"
    assert ok["CodeSha256"] == new_sha


def test_publish_with_a_stale_revision_id_is_412(server):
    name = create_probe(server, "rev")
    stale = server.lam.get_function_configuration(FunctionName=name)["RevisionId"]
    set_tag(server, name, "v2")
    current = server.lam.get_function_configuration(FunctionName=name)["RevisionId"]
    assert current != stale

    exc = client_error(server.lam.publish_version, FunctionName=name, RevisionId=stale)
    assert error_status(exc) == 412
    assert error_code(exc) == "PreconditionFailedException"
    assert_cli_error(server.aws("lambda", "publish-version", "--function-name", name,
                                "--revision-id", stale), "PreconditionFailedException")
    assert version_numbers(server, name) == ["$LATEST"]

    ok = server.lam.publish_version(FunctionName=name, RevisionId=current)
    assert ok["Version"] == "1"
    assert ok["Environment"]["Variables"] == {"TAG": "v2"}


def test_list_versions_by_function_lists_latest_first_and_paginates(server, versioned):
    name = versioned
    full = server.lam.list_versions_by_function(FunctionName=name)
    assert [v["Version"] for v in full["Versions"]] == ["$LATEST", "1", "2", "3"]
    assert "NextMarker" not in full or not full["NextMarker"]
    for v in full["Versions"]:
        assert v["FunctionArn"] == arn(name, v["Version"]), v
    tags = [v["Environment"]["Variables"]["TAG"] for v in full["Versions"]]
    assert tags == ["v4", "v1", "v2", "v3"]

    page1 = server.lam.list_versions_by_function(FunctionName=name, MaxItems=2)
    assert [v["Version"] for v in page1["Versions"]] == ["$LATEST", "1"]
    assert page1.get("NextMarker")
    page2 = server.lam.list_versions_by_function(FunctionName=name, MaxItems=2,
                                                 Marker=page1["NextMarker"])
    assert [v["Version"] for v in page2["Versions"]] == ["2", "3"]
    assert not page2.get("NextMarker")

    cli = cli_json(server.aws("lambda", "list-versions-by-function", "--function-name", name))
    assert [v["Version"] for v in cli["Versions"]] == ["$LATEST", "1", "2", "3"]
    # the CLI's own pagination, one item a page
    cli = cli_json(server.aws("lambda", "list-versions-by-function", "--function-name", name,
                              "--page-size", "1"))
    assert [v["Version"] for v in cli["Versions"]] == ["$LATEST", "1", "2", "3"]


def test_deleted_version_numbers_are_never_reused(server):
    name = create_probe(server, "reuse")
    assert server.lam.publish_version(FunctionName=name)["Version"] == "1"
    set_tag(server, name, "v2")
    assert server.lam.publish_version(FunctionName=name)["Version"] == "2"
    assert server.invoke(name, {}, Qualifier="2").json()["tag"] == "v2"

    rc, out, err = server.aws("lambda", "delete-function", "--function-name", name,
                              "--qualifier", "2")
    assert rc == 0, err
    exc = client_error(server.lam.get_function_configuration, FunctionName=name, Qualifier="2")
    assert error_status(exc) == 404 and error_code(exc) == "ResourceNotFoundException"
    exc = client_error(server.invoke, name, {}, Qualifier="2")
    assert error_status(exc) == 404 and error_code(exc) == "ResourceNotFoundException"
    assert version_numbers(server, name) == ["$LATEST", "1"]
    # the function, $LATEST and version 1 are untouched
    assert server.invoke(name, {}, Qualifier="1").json()["tag"] == "v1"
    assert server.invoke(name, {}).json()["tag"] == "v2"

    set_tag(server, name, "v3")
    third = server.lam.publish_version(FunctionName=name)
    assert third["Version"] == "3", "version 2 was deleted, but its number must not come back"
    assert version_numbers(server, name) == ["$LATEST", "1", "3"]

    # boto3 deletes a version too; the next one is still 4
    resp = server.lam.delete_function(FunctionName=name, Qualifier="3")
    assert status_of(resp) == 204
    set_tag(server, name, "v4")
    assert server.lam.publish_version(FunctionName=name)["Version"] == "4"
    assert version_numbers(server, name) == ["$LATEST", "1", "4"]


def test_versions_aliases_and_numbering_survive_a_restart(make_server):
    s = make_server()
    name = create_probe(s, "restart", "v1", "A")
    s.lam.publish_version(FunctionName=name)
    set_tag(s, name, "v2")
    s.lam.publish_version(FunctionName=name)
    s.lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1",
                       RoutingConfig={"AdditionalVersionWeights": {"2": 0.0}})
    s.lam.delete_alias(FunctionName=name, Name="live")
    s.lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    s.lam.delete_function(FunctionName=name, Qualifier="2")

    s.restart()  # kill -9, same data directory
    assert version_numbers(s, name) == ["$LATEST", "1"]
    alias = s.lam.get_alias(FunctionName=name, Name="live")
    assert alias["FunctionVersion"] == "1"
    inv = s.invoke(name, {}, Qualifier="live")
    assert executed_version(inv) == "1" and inv.json()["tag"] == "v1"
    set_tag(s, name, "v3")
    assert s.lam.publish_version(FunctionName=name)["Version"] == "3", \
        "a deleted version's number came back after a restart"


def test_latest_cannot_be_deleted_on_its_own(server):
    name = create_probe(server, "dellatest")
    exc = client_error(server.lam.delete_function, FunctionName=name, Qualifier="$LATEST")
    assert error_status(exc) == 400
    assert error_code(exc) == "InvalidParameterValueException"
    assert server.invoke(name, {}).function_error is None


def test_deleting_a_version_an_alias_refers_to_is_409(server):
    name = create_probe(server, "delref")
    server.lam.publish_version(FunctionName=name)
    set_tag(server, name, "v2")
    server.lam.publish_version(FunctionName=name)
    set_tag(server, name, "v3")
    server.lam.publish_version(FunctionName=name)
    server.lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    server.lam.create_alias(FunctionName=name, Name="canary", FunctionVersion="3",
                            RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}})

    exc = client_error(server.lam.delete_function, FunctionName=name, Qualifier="1")
    assert error_status(exc) == 409
    assert error_code(exc) == "ResourceConflictException"
    assert "live" in exc.response["Error"]["Message"]
    # a version used only as an alias's additional (weighted) version is referenced too
    assert_cli_error(server.aws("lambda", "delete-function", "--function-name", name,
                                "--qualifier", "2"), "ResourceConflictException")
    assert version_numbers(server, name) == ["$LATEST", "1", "2", "3"]
    assert server.invoke(name, {}, Qualifier="1").json()["tag"] == "v1"

    server.lam.delete_alias(FunctionName=name, Name="live")
    assert status_of(server.lam.delete_function(FunctionName=name, Qualifier="1")) == 204
    assert version_numbers(server, name) == ["$LATEST", "2", "3"]


# --------------------------------------------------------------------------------------
# invoking by qualified ARN and alias


def test_invoke_by_version_alias_and_qualified_arns(server, versioned, tmp_path):
    name = versioned
    server.lam.create_alias(FunctionName=name, Name="stable", FunctionVersion="1")
    partial = f"{ACCOUNT}:function:{name}"
    cases = [
        # (FunctionName, Qualifier, expected executed version, expected TAG, invoked ARN)
        (arn(name, "2"), None, "2", "v2", arn(name, "2")),
        (arn(name, "$LATEST"), None, "$LATEST", "v4", arn(name, "$LATEST")),
        (arn(name, "stable"), None, "1", "v1", arn(name, "stable")),
        (f"{name}:stable", None, "1", "v1", arn(name, "stable")),
        (f"{partial}:3", None, "3", "v3", arn(name, "3")),
        (name, "stable", "1", "v1", arn(name, "stable")),
        (arn(name), "3", "3", "v3", arn(name, "3")),
        (arn(name), None, "$LATEST", "v4", arn(name)),
    ]
    for function_name, qualifier, version, tag, invoked_arn in cases:
        kw = {"Qualifier": qualifier} if qualifier else {}
        inv = server.invoke(function_name, {}, LogType="Tail", **kw)
        assert inv.function_error is None, inv.payload
        body = inv.json()
        label = (function_name, qualifier)
        assert executed_version(inv) == version, label
        assert start_version(inv) == version, label
        assert body["function_version"] == version, label
        assert body["tag"] == tag, label
        assert body["invoked_function_arn"] == invoked_arn, label

    # the AWS CLI reports the executed version of an alias invocation
    out = tmp_path / "out.json"
    meta = cli_json(server.aws("lambda", "invoke", "--function-name", name, "--qualifier",
                               "stable", "--payload", "{}", str(out)))
    assert meta["StatusCode"] == 200
    assert meta["ExecutedVersion"] == "1"
    assert json.loads(out.read_text())["tag"] == "v1"
    meta = cli_json(server.aws("lambda", "invoke", "--function-name", arn(name, "3"),
                               "--payload", "{}", str(out)))
    assert meta["ExecutedVersion"] == "3"
    assert json.loads(out.read_text())["tag"] == "v3"

    # retargeting the alias takes effect for the next invocation
    server.lam.update_alias(FunctionName=name, Name="stable", FunctionVersion="2")
    inv = server.invoke(name, {}, Qualifier="stable")
    assert executed_version(inv) == "2" and inv.json()["tag"] == "v2"

    # unknown versions and aliases are 404s
    for q in ("42", "nosuchalias"):
        exc = client_error(server.invoke, name, {}, Qualifier=q)
        assert error_status(exc) == 404, q
        assert error_code(exc) == "ResourceNotFoundException", q
    # a qualified name and a different ?Qualifier= contradict each other
    exc = client_error(server.invoke, f"{name}:1", {}, Qualifier="stable")
    assert (error_status(exc), error_code(exc)) == (400, "InvalidParameterValueException")

    # GetFunctionConfiguration of an alias: the alias ARN and the version it points to
    cfg = server.lam.get_function_configuration(FunctionName=name, Qualifier="stable")
    assert (cfg["FunctionArn"], cfg["Version"]) == (arn(name, "stable"), "2")


def test_version_and_alias_operations_on_a_missing_function_are_404(server):
    missing = server.name("missing")
    calls = {
        "PublishVersion": lambda: server.lam.publish_version(FunctionName=missing),
        "ListVersionsByFunction":
            lambda: server.lam.list_versions_by_function(FunctionName=missing),
        "CreateAlias": lambda: server.lam.create_alias(FunctionName=missing, Name="live",
                                                       FunctionVersion="1"),
        "GetAlias": lambda: server.lam.get_alias(FunctionName=missing, Name="live"),
        "ListAliases": lambda: server.lam.list_aliases(FunctionName=missing),
        "DeleteFunction(Qualifier=1)":
            lambda: server.lam.delete_function(FunctionName=missing, Qualifier="1"),
    }
    wrong = {}
    for op, call in calls.items():
        exc = client_error(call)
        message = exc.response["Error"]["Message"]
        if (error_status(exc), error_code(exc)) != (404, "ResourceNotFoundException") \
                or arn(missing) not in message:
            wrong[op] = (error_status(exc), error_code(exc), message)
    assert not wrong, \
        f"Lambda answers 404 ResourceNotFoundException 'Function not found: {arn(missing)}...'" \
        f"; got: {wrong}"


# --------------------------------------------------------------------------------------
# alias CRUD


def test_alias_create_get_update_list_delete_with_boto3(server, versioned):
    name = versioned
    created = server.lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1",
                                      Description="production")
    assert status_of(created) == 201
    assert created["AliasArn"] == arn(name, "prod")
    assert created["Name"] == "prod"
    assert created["FunctionVersion"] == "1"
    assert created["Description"] == "production"
    assert created["RevisionId"]
    assert "RoutingConfig" not in created or not created["RoutingConfig"].get(
        "AdditionalVersionWeights")

    got = server.lam.get_alias(FunctionName=name, Name="prod")
    assert {k: got[k] for k in ("AliasArn", "Name", "FunctionVersion", "Description",
                                "RevisionId")} == \
        {k: created[k] for k in ("AliasArn", "Name", "FunctionVersion", "Description",
                                 "RevisionId")}
    # by ARN too
    assert server.lam.get_alias(FunctionName=arn(name), Name="prod")["FunctionVersion"] == "1"

    updated = server.lam.update_alias(FunctionName=name, Name="prod", FunctionVersion="2",
                                      Description="moved",
                                      RevisionId=created["RevisionId"])
    assert status_of(updated) == 200
    assert updated["FunctionVersion"] == "2"
    assert updated["Description"] == "moved"
    assert updated["RevisionId"] != created["RevisionId"]

    exc = client_error(server.lam.update_alias, FunctionName=name, Name="prod",
                       FunctionVersion="3", RevisionId=created["RevisionId"])
    assert error_status(exc) == 412
    assert error_code(exc) == "PreconditionFailedException"
    assert server.lam.get_alias(FunctionName=name, Name="prod")["FunctionVersion"] == "2"

    weighted = server.lam.update_alias(
        FunctionName=name, Name="prod",
        RoutingConfig={"AdditionalVersionWeights": {"3": 0.25}})
    assert weighted["FunctionVersion"] == "2", "members not given are kept"
    assert weighted["Description"] == "moved"
    assert weighted["RoutingConfig"]["AdditionalVersionWeights"] == {"3": 0.25}
    cleared = server.lam.update_alias(FunctionName=name, Name="prod",
                                      RoutingConfig={"AdditionalVersionWeights": {}})
    assert not cleared.get("RoutingConfig", {}).get("AdditionalVersionWeights")

    server.lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="3")
    listed = server.lam.list_aliases(FunctionName=name)["Aliases"]
    by_name = {a["Name"]: a for a in listed}
    assert {"prod", "beta"} <= set(by_name)
    assert by_name["prod"]["FunctionVersion"] == "2"
    assert by_name["beta"]["AliasArn"] == arn(name, "beta")
    only3 = server.lam.list_aliases(FunctionName=name, FunctionVersion="3")["Aliases"]
    assert "beta" in {a["Name"] for a in only3}
    assert "prod" not in {a["Name"] for a in only3}
    page = server.lam.list_aliases(FunctionName=name, MaxItems=1)
    assert len(page["Aliases"]) == 1 and page.get("NextMarker")

    resp = server.lam.delete_alias(FunctionName=name, Name="prod")
    assert status_of(resp) == 204
    exc = client_error(server.lam.get_alias, FunctionName=name, Name="prod")
    assert error_status(exc) == 404
    assert error_code(exc) == "ResourceNotFoundException"
    exc = client_error(server.lam.delete_alias, FunctionName=name, Name="prod")
    assert error_status(exc) == 404
    exc = client_error(server.lam.update_alias, FunctionName=name, Name="prod",
                       FunctionVersion="1")
    assert error_status(exc) == 404
    exc = client_error(server.invoke, name, {}, Qualifier="prod")
    assert error_status(exc) == 404
    assert "prod" not in {a["Name"] for a in server.lam.list_aliases(FunctionName=name)[
        "Aliases"]}


def test_alias_create_get_update_list_delete_with_aws_cli(server, versioned):
    name = versioned
    created = cli_json(server.aws(
        "lambda", "create-alias", "--function-name", name, "--name", "cli-live",
        "--function-version", "1", "--description", "via the cli",
        "--routing-config", json.dumps({"AdditionalVersionWeights": {"2": 0.5}})))
    assert created["AliasArn"] == arn(name, "cli-live")
    assert created["FunctionVersion"] == "1"
    assert created["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.5}

    got = cli_json(server.aws("lambda", "get-alias", "--function-name", name,
                              "--name", "cli-live"))
    assert got["RevisionId"] == created["RevisionId"]
    assert got["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.5}

    updated = cli_json(server.aws(
        "lambda", "update-alias", "--function-name", name, "--name", "cli-live",
        "--function-version", "3", "--routing-config", "AdditionalVersionWeights={}",
        "--revision-id", created["RevisionId"]))
    assert updated["FunctionVersion"] == "3"
    assert not updated.get("RoutingConfig", {}).get("AdditionalVersionWeights")
    assert_cli_error(server.aws(
        "lambda", "update-alias", "--function-name", name, "--name", "cli-live",
        "--function-version", "1", "--revision-id", created["RevisionId"]),
        "PreconditionFailedException")

    listed = cli_json(server.aws("lambda", "list-aliases", "--function-name", name))
    assert "cli-live" in {a["Name"] for a in listed["Aliases"]}
    filtered = cli_json(server.aws("lambda", "list-aliases", "--function-name", name,
                                   "--function-version", "3"))
    assert "cli-live" in {a["Name"] for a in filtered["Aliases"]}
    filtered = cli_json(server.aws("lambda", "list-aliases", "--function-name", name,
                                   "--function-version", "1"))
    assert "cli-live" not in {a["Name"] for a in filtered["Aliases"]}

    rc, out, err = server.aws("lambda", "delete-alias", "--function-name", name,
                              "--name", "cli-live")
    assert rc == 0, err
    assert_cli_error(server.aws("lambda", "get-alias", "--function-name", name,
                                "--name", "cli-live"), "ResourceNotFoundException")


def test_duplicate_alias_is_409(server, versioned):
    name = versioned
    server.lam.create_alias(FunctionName=name, Name="dup", FunctionVersion="1")
    exc = client_error(server.lam.create_alias, FunctionName=name, Name="dup",
                       FunctionVersion="2")
    assert error_status(exc) == 409
    assert error_code(exc) == "ResourceConflictException"
    assert arn(name, "dup") in exc.response["Error"]["Message"]
    assert_cli_error(server.aws("lambda", "create-alias", "--function-name", name,
                                "--name", "dup", "--function-version", "3"),
                     "ResourceConflictException")
    assert server.lam.get_alias(FunctionName=name, Name="dup")["FunctionVersion"] == "1"


# (alias name, FunctionVersion, AdditionalVersionWeights, status, codes, message fragment)
BAD_ALIASES = {
    "latest-with-weights": (
        "$LATEST", {"1": 0.5}, 400, {"InvalidParameterValueException"},
        "$LATEST is not supported for an alias pointing to more than 1 version"),
    "weight-above-one": (
        "1", {"2": 1.5}, 400, CONSTRAINT_ERRORS,
        "Member must have value less than or equal to 1.0"),
    "weight-below-zero": (
        "1", {"2": -0.25}, 400, CONSTRAINT_ERRORS,
        "Member must have value greater than or equal to 0.0"),
    "two-additional-versions": (
        "1", {"2": 0.1, "3": 0.1}, 400, {"InvalidParameterValueException"},
        "Number of items in AdditionalVersionWeights cannot be greater than 1"),
    "unknown-version": (
        "99", None, 404, {"ResourceNotFoundException"}, "99"),
    "unknown-additional-version": (
        "1", {"99": 0.5}, None, {"InvalidParameterValueException", "ResourceNotFoundException"},
        "99"),
    "additional-version-is-the-primary": (
        "1", {"1": 0.5}, 400, {"InvalidParameterValueException"},
        "already included in routing configuration"),
    "additional-version-not-a-number": (
        "1", {"live": 0.5}, 400, CONSTRAINT_ERRORS, "[0-9]+"),
}


@pytest.fixture(scope="module")
def unvalidated(server):
    """A boto3 client that sends what it is given (no client-side range checks)."""
    return server.client("lambda", parameter_validation=False)


@pytest.mark.parametrize("case", list(BAD_ALIASES))
def test_invalid_alias_is_rejected_as_lambda_does(server, versioned, unvalidated, case):
    version, weights, status, codes, fragment = BAD_ALIASES[case]
    name = versioned
    alias = "bad-" + case
    kw = {"FunctionName": name, "Name": alias, "FunctionVersion": version}
    if weights is not None:
        kw["RoutingConfig"] = {"AdditionalVersionWeights": weights}
    exc = client_error(unvalidated.create_alias, **kw)
    if status is None:  # Lambda's answer is not pinned down: either client error is fine
        assert error_status(exc) in (400, 404), exc.response
    else:
        assert error_status(exc) == status, exc.response
    assert error_code(exc) in codes, exc.response
    assert fragment in exc.response["Error"]["Message"], exc.response
    exc = client_error(server.lam.get_alias, FunctionName=name, Name=alias)
    assert error_code(exc) == "ResourceNotFoundException", "a rejected alias was created"

    # UpdateAlias validates the same way and leaves the alias as it was
    ok = "ok-" + case
    server.lam.create_alias(FunctionName=name, Name=ok, FunctionVersion="3")
    del kw["Name"]
    exc = client_error(unvalidated.update_alias, Name=ok, **kw)
    if status is not None:
        assert error_status(exc) == status, exc.response
    assert error_code(exc) in codes, exc.response
    after = server.lam.get_alias(FunctionName=name, Name=ok)
    assert after["FunctionVersion"] == "3"
    assert not after.get("RoutingConfig", {}).get("AdditionalVersionWeights")


def test_invalid_alias_errors_have_the_aws_error_shape_and_cli_reports_them(server, versioned):
    name = versioned
    resp = server.raw("POST", f"/2015-03-31/functions/{name}/aliases", {
        "Name": "rawbad", "FunctionVersion": "$LATEST",
        "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.5}}})
    assert resp.status == 400, resp.body
    assert resp.error_type.split(":")[0] == "InvalidParameterValueException"
    body = resp.json()
    assert body["Type"] == "User"
    assert "$LATEST is not supported" in body["message"]

    assert_cli_error(server.aws(
        "lambda", "create-alias", "--function-name", name, "--name", "clibad",
        "--function-version", "$LATEST",
        "--routing-config", json.dumps({"AdditionalVersionWeights": {"1": 0.5}})),
        "InvalidParameterValueException")
    assert_cli_error(server.aws(
        "lambda", "create-alias", "--function-name", name, "--name", "clibad",
        "--function-version", "1",
        "--routing-config", json.dumps({"AdditionalVersionWeights": {"2": 0.5, "3": 0.5}})),
        "InvalidParameterValueException")


def test_alias_name_of_digits_only_is_rejected(server, versioned):
    name = versioned
    exc = client_error(server.lam.create_alias, FunctionName=name, Name="123",
                       FunctionVersion="1")
    assert error_status(exc) == 400
    assert error_code(exc) in CONSTRAINT_ERRORS
    assert "(?!^[0-9]+$)" in exc.response["Error"]["Message"]
    assert_cli_error(server.aws("lambda", "create-alias", "--function-name", name,
                                "--name", "2024", "--function-version", "1"),
                     CONSTRAINT_ERRORS)
    names = {a["Name"] for a in server.lam.list_aliases(FunctionName=name)["Aliases"]}
    assert not names & {"123", "2024"}
    # digits with a letter are a fine alias name
    assert server.lam.create_alias(FunctionName=name, Name="2024a",
                                   FunctionVersion="1")["Name"] == "2024a"


# --------------------------------------------------------------------------------------
# weighted routing


def binomial_bounds(n: int, p: float, sigmas: float = 4.0) -> tuple[float, float]:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd


def test_weighted_alias_splits_traffic_by_weight(server, versioned):
    name = versioned
    weight, n = 0.3, 400
    server.lam.create_alias(FunctionName=name, Name="split", FunctionVersion="1",
                            RoutingConfig={"AdditionalVersionWeights": {"2": weight}})
    tags = {"1": ("v1", "A"), "2": ("v2", "B")}
    lanes = 4
    clients = [server.client("lambda") for _ in range(lanes)]

    def lane(i):
        out = []
        for _ in range(n // lanes):
            inv = server.invoke(name, {}, client=clients[i], Qualifier="split", LogType="Tail")
            out.append(inv)
        return out

    with ThreadPoolExecutor(lanes) as pool:
        results = [inv for chunk in pool.map(lane, range(lanes)) for inv in chunk]
    assert len(results) == n
    counts = {"1": 0, "2": 0}
    for inv in results:
        assert inv.function_error is None, inv.payload
        version = executed_version(inv)
        assert version in counts, version
        counts[version] += 1
        body = inv.json()
        # the header tells the truth: that version's code and configuration ran
        assert (body["tag"], body["code_tag"]) == tags[version], (version, body)
        assert body["function_version"] == version
        assert body["invoked_function_arn"] == arn(name, "split")
        # and the START line of the log names it
        assert start_version(inv) == version
        rid = inv.headers["x-amzn-requestid"]
        assert REPORT_RE.match(report_line_for(inv.log_tail.splitlines(), rid) or ""), \
            inv.log_tail
    low, high = binomial_bounds(n, weight)
    assert low <= counts["2"] <= high, \
        f"{counts['2']} of {n} invocations ran version 2 at weight {weight}; " \
        f"expected {n * weight:.0f} within [{low:.1f}, {high:.1f}] (4 sigma)"

    # the log group agrees with the headers: one START line per invocation, each with the
    # version that ran
    by_id = {inv.headers["x-amzn-requestid"]: executed_version(inv) for inv in results}

    def all_started(messages):
        starts = {}
        for m in messages:
            mm = START_RE.match(m)
            if mm and mm["id"] in by_id:
                starts.setdefault(mm["id"], []).append(mm["version"])
        return starts if len(starts) == len(by_id) else None

    messages = server.wait_log(name, lambda ms: all_started(ms) is not None, timeout=30)
    starts = all_started(messages)
    for rid, version in by_id.items():
        assert starts[rid] == [version], (rid, starts[rid], version)


def test_updating_weights_shifts_traffic(server, versioned):
    name = versioned
    server.lam.create_alias(FunctionName=name, Name="shift", FunctionVersion="1",
                            RoutingConfig={"AdditionalVersionWeights": {"3": 0.0}})

    def versions(k):
        return [executed_version(server.invoke(name, {}, Qualifier="shift")) for _ in range(k)]

    assert set(versions(40)) == {"1"}, "weight 0.0 never routes to the additional version"

    # n=200 at weight 0.5: the additional version gets its share
    server.lam.update_alias(FunctionName=name, Name="shift",
                            RoutingConfig={"AdditionalVersionWeights": {"3": 0.5}})
    got = versions(200)
    assert set(got) == {"1", "3"}
    low, high = binomial_bounds(200, 0.5)
    assert low <= got.count("3") <= high, got.count("3")

    # promoting version 3 and dropping the routing sends everything to 3
    rc, out, err = server.aws("lambda", "update-alias", "--function-name", name,
                              "--name", "shift", "--function-version", "3",
                              "--routing-config", "AdditionalVersionWeights={}")
    assert rc == 0, err
    assert set(versions(40)) == {"3"}
