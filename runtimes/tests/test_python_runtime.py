"""The python3.x bootstrap (runtimes/python/bootstrap.py) against the fake Runtime API."""

import json
import time

import pytest

from conftest import FUNCTION_NAME

HELLO = {"app.py": """
    def handler(event, context):
        print("hello from handler", event)
        return {"hello": event["name"]}
"""}


def test_hello_world(start):
    rt = start("python", "app.handler", HELLO)
    res = rt.invoke({"name": "world"})
    assert res.path.endswith("/response")
    assert res.json() == {"hello": "world"}
    assert res.headers["content-type"] == "application/json"
    # the print() line reached the pipe before the response was posted
    assert "hello from handler {'name': 'world'}\n" in res.stdout_before


def test_context_fields(start):
    rt = start("python", "app.handler", {"app.py": """
        import os
        def handler(event, context):
            return {
                "aws_request_id": context.aws_request_id,
                "function_name": context.function_name,
                "function_version": context.function_version,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "invoked_function_arn": context.invoked_function_arn,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "remaining": context.get_remaining_time_in_millis(),
                "client_context": context.client_context,
                "identity": [context.identity.cognito_identity_id,
                             context.identity.cognito_identity_pool_id],
                "trace": os.environ.get("_X_AMZN_TRACE_ID"),
            }
    """})
    deadline = int(time.time() * 1000) + 5000
    res = rt.invoke({}, request_id="req-1", deadline_ms=deadline, trace_id="Root=1-abc;Sampled=1")
    body = res.json()
    assert body["aws_request_id"] == "req-1"
    assert body["function_name"] == FUNCTION_NAME
    assert body["function_version"] == "$LATEST"
    assert body["memory_limit_in_mb"] == "256"
    assert body["invoked_function_arn"] == rt.api.function_arn
    assert body["log_group_name"] == "/aws/lambda/" + FUNCTION_NAME
    assert body["log_stream_name"].endswith("0123456789abcdef0123456789abcdef")
    assert 3000 < body["remaining"] <= 5000
    assert body["client_context"] is None
    assert body["identity"] == [None, None]
    assert body["trace"] == "Root=1-abc;Sampled=1"
    # trace id is per invoke: gone when the next event has none
    assert rt.invoke({}).json()["trace"] is None


def test_client_context_and_identity(start):
    rt = start("python", "app.handler", {"app.py": """
        def handler(event, context):
            cc = context.client_context
            return {"custom": cc.custom, "env": cc.env,
                    "app_title": cc.client.app_title,
                    "installation_id": cc.client.installation_id,
                    "identity": context.identity.cognito_identity_id,
                    "pool": context.identity.cognito_identity_pool_id}
    """})
    res = rt.invoke({}, client_context={
        "client": {"installation_id": "inst-1", "app_title": "MyApp"},
        "custom": {"k": "v"}, "env": {"platform": "Android"}},
        cognito_identity={"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"})
    assert res.json() == {"custom": {"k": "v"}, "env": {"platform": "Android"},
                          "app_title": "MyApp", "installation_id": "inst-1",
                          "identity": "id-1", "pool": "pool-1"}


def test_handler_exception(start):
    rt = start("python", "app.handler", {"app.py": """
        def handler(event, context):
            print("about to fail")
            raise ValueError("boom")
    """})
    res = rt.invoke({}, request_id="req-err")
    assert res.path == "/2018-06-01/runtime/invocation/req-err/error"
    assert res.headers["lambda-runtime-function-error-type"] == "Unhandled"
    body = res.json()
    assert body["errorMessage"] == "boom"
    assert body["errorType"] == "ValueError"
    assert body["requestId"] == "req-err"
    assert body["stackTrace"] == [
        f'  File "{rt.task_root}/app.py", line 4, in handler\n    raise ValueError("boom")\n']
    # logged like Lambda, before the error was posted
    assert "about to fail\n" in res.stdout_before
    assert "[ERROR] ValueError: boom\nTraceback (most recent call last):\n" in res.stdout_before
    assert 'raise ValueError("boom")' in res.stdout_before
    # the runtime keeps serving
    assert rt.invoke({}).path.endswith("/error")


def test_partial_line_output_flushed_before_response(start):
    rt = start("python", "app.handler", {"app.py": """
        import sys
        def handler(event, context):
            print("no newline", end="")
            sys.stderr.write("err no newline")
            context.log("via context.log")
            return 1
    """})
    res = rt.invoke({})
    assert "no newline" in res.stdout_before and "via context.log" in res.stdout_before
    assert "err no newline" in res.stderr_before


def test_unserializable_result_is_marshal_error(start):
    rt = start("python", "app.handler", {"app.py": """
        def handler(event, context):
            return {"s": {1, 2}}
    """})
    body = rt.invoke({}).json()
    assert body["errorType"] == "Runtime.MarshalError"
    assert body["errorMessage"] == (
        "Unable to marshal response: Object of type set is not JSON serializable")


def test_result_encodings(start):
    rt = start("python", "app.handler", {"app.py": """
        import decimal
        def handler(event, context):
            kind = event["kind"]
            if kind == "none": return None
            if kind == "str": return "héllo"
            if kind == "bytes": return b"raw bytes"
            if kind == "decimal": return {"a": decimal.Decimal("5"), "b": decimal.Decimal("1.5")}
            if kind == "echo": return event
    """})
    assert rt.invoke({"kind": "none"}).body == b"null"
    assert rt.invoke({"kind": "str"}).body == b'"h\\u00e9llo"'  # json.dumps default
    res = rt.invoke({"kind": "bytes"})
    assert res.body == b"raw bytes" and res.headers["content-type"] == "application/unknown"
    assert rt.invoke({"kind": "decimal"}).json() == {"a": 5, "b": 1.5}
    event = {"kind": "echo", "nested": [1, 2.5, None, True, "ü", {"x": []}]}
    assert rt.invoke(event).json() == event


def test_empty_and_invalid_event(start):
    rt = start("python", "app.handler", {"app.py": """
        def handler(event, context):
            return {"event": event}
    """})
    assert rt.invoke(b"", raw=True).json() == {"event": None}
    body = rt.invoke(b"{not json", raw=True).json()
    assert body["errorType"] == "Runtime.UnmarshalError"
    assert body["errorMessage"].startswith("Unable to unmarshal input: Expecting property name")


def test_several_invocations_one_connection(start):
    rt = start("python", "app.handler", {"app.py": """
        count = 0
        def handler(event, context):
            global count
            count += 1
            print("invocation", count)
            return count
    """})
    for i in range(1, 6):
        res = rt.invoke({})
        assert res.json() == i
        assert f"invocation {i}\n" in res.stdout_before
    assert {r.conn_id for r in rt.api.requests} == {1}
    assert rt.api.conn_count == 1


@pytest.mark.parametrize("mode", ["header", "silent"])
def test_reconnects_when_connection_drops(start, mode):
    rt = start("python", "app.handler", HELLO)
    rt.api.close_after_post = mode
    for name in ("a", "b", "c"):
        assert rt.invoke({"name": name}).json() == {"hello": name}
    assert rt.api.conn_count >= 3


def test_nested_handler_path(start):
    rt = start("python", "pkg/sub/mod.handler", {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/mod.py": """
            def handler(event, context):
                return __name__
        """})
    assert rt.invoke({}).json() == "pkg.sub.mod"


def test_sys_path(start, tmp_path):
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / "helper.py").write_text("VALUE = 'from PYTHONPATH'\n")
    (vendor / "shadowed.py").write_text("VALUE = 'from PYTHONPATH'\n")
    rt = start("python", "app.handler", {
        "app.py": """
            import sys, helper, shadowed
            def handler(event, context):
                return {"path0": sys.path[0], "helper": helper.VALUE, "shadowed": shadowed.VALUE,
                        "runtime_dir_on_path": any(p.endswith("runtimes/python") for p in sys.path)}
        """,
        "shadowed.py": "VALUE = 'from task root'\n"}, env={"PYTHONPATH": str(vendor)})
    assert rt.invoke({}).json() == {"path0": str(rt.task_root), "helper": "from PYTHONPATH",
                                    "shadowed": "from task root", "runtime_dir_on_path": False}


def test_logging_module_uses_lambda_format(start):
    rt = start("python", "app.handler", {"app.py": """
        import logging
        logging.basicConfig(level=logging.DEBUG)  # a no-op on Lambda: root already has a handler
        logger = logging.getLogger()
        logger.setLevel(logging.INFO)
        logger.info("at init")
        def handler(event, context):
            logger.info("in handler")
            logger.debug("hidden")
            return 1
    """})
    res = rt.invoke({}, request_id="req-log")
    out = res.stdout_before
    assert "[INFO]\t" in out and "Z\t\tat init\n" in out
    assert "Z\treq-log\tin handler\n" in out
    assert "hidden" not in out
    assert out.count("in handler") == 1  # no duplicate from basicConfig


# --- init errors ---------------------------------------------------------------

def _init_error(rt):
    assert rt.wait_exit() != 0
    assert rt.api.wait_for(lambda: rt.api.init_errors)
    req = rt.api.init_errors[0]
    assert rt.api.responses == {} and rt.api.errors == {}
    return req, req.json()


def test_init_error_malformed_handler(start):
    rt = start("python", "app", HELLO)
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "Runtime.MalformedHandlerName"
    assert body == {"errorMessage": "Bad handler 'app': not enough values to unpack (expected 2, got 1)",
                    "errorType": "Runtime.MalformedHandlerName", "requestId": "", "stackTrace": []}
    assert "[ERROR] Runtime.MalformedHandlerName: Bad handler 'app'" in rt.stderr


def test_init_error_import_module(start):
    rt = start("python", "missing.handler", HELLO)
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "Runtime.ImportModuleError"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"] == "Unable to import module 'missing': No module named 'missing'"
    assert ("[ERROR] Runtime.ImportModuleError: Unable to import module 'missing': "
            "No module named 'missing'") in rt.stderr
    # no request for /next after an init error
    assert not any(r.path.endswith("/next") for r in rt.api.requests)


def test_init_error_import_inside_module(start):
    rt = start("python", "app.handler", {"app.py": "import not_installed_dep\n"})
    _, body = _init_error(rt)
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"] == "Unable to import module 'app': No module named 'not_installed_dep'"


def test_init_error_syntax(start):
    rt = start("python", "app.handler", {"app.py": "def handler(event, context)\n    return 1\n"})
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "Runtime.UserCodeSyntaxError"
    assert body["errorType"] == "Runtime.UserCodeSyntaxError"
    assert body["errorMessage"].startswith("Syntax error in module 'app': ")
    assert body["stackTrace"] == [
        f'  File "{rt.task_root}/app.py" Line 1\n    def handler(event, context)\n']


def test_init_error_handler_not_found(start):
    rt = start("python", "app.nope", HELLO)
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "Handler 'nope' missing on module 'app'"


def test_init_error_exception_at_import(start):
    rt = start("python", "app.handler", {"app.py": "raise RuntimeError('bad config')\n"})
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "RuntimeError"
    assert body["errorType"] == "RuntimeError" and body["errorMessage"] == "bad config"
    assert any("app.py" in frame and "raise RuntimeError" in frame for frame in body["stackTrace"])


def test_startup_imports_stay_minimal(start):
    """Guard the cold start: nothing heavy may be imported before the first /next."""
    rt = start("python", "app.handler", {"app.py": "def handler(e, c):\n    return 1\n"},
               extra_args=["-X", "importtime"])
    assert rt.api.wait_for(lambda: rt.api.next_times)
    imported = {line.split("|")[-1].strip() for line in rt.stderr.splitlines()
                if line.startswith("import time:")} - {"app", "imported package"}
    interpreter_startup = {"_io", "marshal", "posix", "_frozen_importlib_external", "time",
                           "zipimport", "_codecs", "codecs", "encodings.aliases", "encodings",
                           "encodings.utf_8", "_signal", "_abc", "abc", "io"}
    allowed = {"os", "stat", "_stat", "_collections_abc", "posixpath", "genericpath",
               "_socket", "_json", "_nimbus_bootstrap"}
    assert imported - interpreter_startup - allowed == set()


def test_init_error_builtin_module_conflict(start):
    rt = start("python", "sys.handler", HELLO)
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "Runtime.BuiltInModuleConflict"
    assert body["errorMessage"] == "Cannot use built-in module sys as a handler module"


def test_init_error_unicode_exception_name(start):
    rt = start("python", "app.handler", {"app.py": """
        class Ärger(Exception):
            pass
        raise Ärger("kaputt")
    """})
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "_rger"
    assert body["errorType"] == "Ärger"


def test_bad_client_context_header(start):
    rt = start("python", "app.handler", HELLO)
    body = rt.invoke({}, extra_headers={"Lambda-Runtime-Client-Context": "{nope"}).json()
    assert body["errorType"] == "Runtime.LambdaContextUnmarshalError"
    assert body["errorMessage"].startswith("Unable to parse Client Context JSON: ")
