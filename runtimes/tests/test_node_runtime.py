"""The nodejs20.x bootstrap (runtimes/node/bootstrap.js) against the fake Runtime API."""

import json
import re
import time

import pytest

from conftest import FUNCTION_NAME

# `<ISO time>\t<request id>\t<LEVEL>\t<message>`
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t(?P<id>[^\t]*)\t(?P<level>[A-Z]+)\t(?P<msg>.*)$")


def log_lines(text):
    out = []
    for line in text.split("\n")[:-1]:  # not splitlines(): '\r' is inside a line
        m = LOG_LINE.match(line)
        assert m, f"not a Lambda log line: {line!r}"
        out.append((m["id"], m["level"], m["msg"]))
    return out


ASYNC_HELLO = {"index.js": """
    exports.handler = async (event, context) => {
      console.log('hello from handler', event.name);
      return { hello: event.name };
    };
"""}


def test_hello_world_async(start):
    rt = start("node", "index.handler", ASYNC_HELLO)
    res = rt.invoke({"name": "world"}, request_id="req-1")
    assert res.path == "/2018-06-01/runtime/invocation/req-1/response"
    assert res.json() == {"hello": "world"}
    assert log_lines(res.stdout_before) == [("req-1", "INFO", "hello from handler world")]


def test_console_levels_and_format(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async () => {
          console.log('log %s', 'fmt', { a: 1 });
          console.info('info');
          console.warn('warn');
          console.error('error');
          console.debug('debug');
          console.log('two\\nlines');
          process.stdout.write('raw stdout\\n');
          return 1;
        };
    """})
    res = rt.invoke({}, request_id="r")
    lines = log_lines(res.stdout_before.replace("raw stdout\n", ""))
    assert lines == [("r", "INFO", "log fmt { a: 1 }"), ("r", "INFO", "info"),
                     ("r", "WARN", "warn"), ("r", "ERROR", "error"), ("r", "DEBUG", "debug"),
                     ("r", "INFO", "two\rlines")]  # newlines become \r: one call, one line
    assert "raw stdout\n" in res.stdout_before


def test_log_level_filter(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async () => { console.debug('dbg'); console.info('inf'); console.warn('wrn'); };
    """}, env={"AWS_LAMBDA_LOG_LEVEL": "WARN"})
    res = rt.invoke({}, request_id="r")
    assert [l[2] for l in log_lines(res.stdout_before)] == ["wrn"]


def test_context_fields(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async (event, context) => ({
          awsRequestId: context.awsRequestId,
          functionName: context.functionName,
          functionVersion: context.functionVersion,
          memoryLimitInMB: context.memoryLimitInMB,
          invokedFunctionArn: context.invokedFunctionArn,
          logGroupName: context.logGroupName,
          logStreamName: context.logStreamName,
          remaining: context.getRemainingTimeInMillis(),
          clientContext: context.clientContext === undefined ? 'undefined' : context.clientContext,
          identity: context.identity === undefined ? 'undefined' : context.identity,
          waits: context.callbackWaitsForEmptyEventLoop,
          fns: [typeof context.done, typeof context.succeed, typeof context.fail],
          trace: process.env._X_AMZN_TRACE_ID || null,
        });
    """})
    deadline = int(time.time() * 1000) + 5000
    body = rt.invoke({}, request_id="req-ctx", deadline_ms=deadline,
                     trace_id="Root=1-abc;Sampled=1").json()
    assert 3000 < body.pop("remaining") <= 5000
    assert body == {
        "awsRequestId": "req-ctx", "functionName": FUNCTION_NAME, "functionVersion": "$LATEST",
        "memoryLimitInMB": "256", "invokedFunctionArn": rt.api.function_arn,
        "logGroupName": "/aws/lambda/" + FUNCTION_NAME,
        "logStreamName": "2026/11/25/[$LATEST]0123456789abcdef0123456789abcdef",
        "clientContext": "undefined", "identity": "undefined", "waits": True,
        "fns": ["function", "function", "function"], "trace": "Root=1-abc;Sampled=1"}
    assert rt.invoke({}).json()["trace"] is None


def test_client_context_and_identity(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async (event, context) => ({ cc: context.clientContext, id: context.identity });
    """})
    cc = {"client": {"installation_id": "inst-1", "app_title": "MyApp"},
          "custom": {"k": "v"}, "env": {"platform": "Android"}}
    ident = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    assert rt.invoke({}, client_context=cc, cognito_identity=ident).json() == {"cc": cc, "id": ident}


def test_callback_handler(start):
    rt = start("node", "index.handler", {"index.js": """
        let n = 0;
        exports.handler = (event, context, callback) => {
          n++;
          setTimeout(() => console.log('timer still ran', n), 30);
          callback(null, { n });   // waits for the empty event loop, so the timer logs first
        };
    """})
    for i in (1, 2):
        res = rt.invoke({}, request_id=f"r{i}")
        assert res.json() == {"n": i}
        assert ("r%d" % i, "INFO", f"timer still ran {i}") in log_lines(res.stdout_before)


def test_callback_without_waiting_for_event_loop(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = (event, context, callback) => {
          context.callbackWaitsForEmptyEventLoop = false;
          setTimeout(() => {}, 5000);   // would block the response if we waited
          callback(null, 'fast');
        };
    """})
    t0 = time.monotonic()
    assert rt.invoke({}).json() == "fast"
    assert time.monotonic() - t0 < 2


def test_callback_error_and_context_methods(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = (event, context, callback) => {
          if (event.kind === 'cb-error') return callback(new TypeError('bad input'));
          if (event.kind === 'succeed') return context.succeed({ via: 'succeed' });
          if (event.kind === 'done') return setTimeout(() => context.done(null, 'done!'), 10);
          if (event.kind === 'fail') return context.fail('failed string');
          if (event.kind === 'never') return;   // never calls back: null once the loop drains
        };
    """})
    body = rt.invoke({"kind": "cb-error"}).json()
    assert body["errorType"] == "TypeError" and body["errorMessage"] == "bad input"
    assert body["trace"][0] == "TypeError: bad input"
    assert rt.invoke({"kind": "succeed"}).json() == {"via": "succeed"}
    assert rt.invoke({"kind": "done"}).json() == "done!"
    assert rt.invoke({"kind": "fail"}).json() == {
        "errorType": "string", "errorMessage": "failed string", "trace": []}
    res = rt.invoke({"kind": "never"})
    assert res.path.endswith("/response") and res.body == b"null"


def test_sync_handler_return_value(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = (event) => ({ sync: event.v * 2 });
    """})
    assert rt.invoke({"v": 21}).json() == {"sync": 42}


def test_async_handler_throws(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async () => {
          console.log('about to fail');
          const e = new Error('boom');
          e.code = 'E_BOOM';
          throw e;
        };
    """})
    res = rt.invoke({}, request_id="req-err")
    assert res.path == "/2018-06-01/runtime/invocation/req-err/error"
    assert res.headers["lambda-runtime-function-error-type"] == "Unhandled"
    body = res.json()
    assert set(body) == {"errorType", "errorMessage", "trace"}
    assert body["errorType"] == "Error" and body["errorMessage"] == "boom"
    assert body["trace"][0] == "Error: boom"
    assert any("index.js" in line for line in body["trace"][1:])
    lines = log_lines(res.stdout_before)
    assert lines[0] == ("req-err", "INFO", "about to fail")
    rid, level, msg = lines[1]
    assert (rid, level) == ("req-err", "ERROR") and msg.startswith("Invoke Error \t{")
    logged = json.loads(msg[len("Invoke Error \t"):])
    assert logged["errorType"] == "Error" and logged["errorMessage"] == "boom"
    assert logged["code"] == "E_BOOM" and logged["stack"][0] == "Error: boom"
    assert rt.invoke({}).path.endswith("/error")  # still serving


def test_sync_throw(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = (event, context) => { throw new RangeError('sync boom'); };
    """})
    body = rt.invoke({}).json()
    assert body["errorType"] == "RangeError" and body["errorMessage"] == "sync boom"


def test_uncaught_exception_during_invoke(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async () => {
          setTimeout(() => { throw new Error('async crash'); }, 1);
          return new Promise(() => {});
        };
    """})
    res = rt.invoke({})
    assert res.path.endswith("/error")
    assert res.json()["errorMessage"] == "async crash"
    assert rt.wait_exit() == 129


def test_unhandled_rejection_during_invoke(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async () => {
          Promise.reject(new Error('nope'));
          await new Promise((r) => setTimeout(r, 200));
          return 'too late';
        };
    """})
    body = rt.invoke({}).json()
    assert body["errorType"] == "Runtime.UnhandledPromiseRejection"
    assert body["errorMessage"] == "Error: nope"
    assert rt.wait_exit() == 128


def test_async_handler_never_settles(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async () => new Promise(() => {});
    """})
    body = rt.invoke({}).json()
    assert body["errorType"] == "Runtime.NodeJsExit"
    assert body["errorMessage"].startswith("The Lambda runtime client detected an unexpected")
    assert rt.invoke({}).path.endswith("/error")  # the loop goes on


def test_unserializable_result(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async () => { const a = {}; a.self = a; return a; };
    """})
    body = rt.invoke({}).json()
    assert body["errorMessage"] == "Unable to stringify response body"


def test_undefined_result_and_empty_event(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async (event) => { if (event !== undefined) return event; };
    """})
    assert rt.invoke(b"", raw=True).body == b"null"
    assert rt.invoke({"x": "ü"}).json() == {"x": "ü"}


def test_esm_mjs_handler(start):
    rt = start("node", "app.handler", {"app.mjs": """
        import { basename } from 'node:path';
        export const handler = async (event) => ({ esm: true, file: basename(import.meta.url) });
    """})
    assert rt.invoke({}).json() == {"esm": True, "file": "app.mjs"}


def test_esm_js_with_type_module(start):
    rt = start("node", "index.handler", {
        "package.json": '{"type": "module"}',
        "index.js": "export async function handler() { return typeof require; }\n"})
    assert rt.invoke({}).json() == "undefined"  # really loaded as ESM


def test_cjs_extension(start):
    rt = start("node", "lib.handler", {"lib.cjs": "exports.handler = async () => 'cjs';\n"})
    assert rt.invoke({}).json() == "cjs"


def test_nested_handler_path_and_property(start):
    rt = start("node", "src/api/index.routes.get", {
        "src/api/index.js": "exports.routes = { get: async () => __filename };\n"})
    assert rt.invoke({}).json() == str(rt.task_root / "src/api/index.js")


def test_require_from_node_modules(start):
    rt = start("node", "index.handler", {
        "node_modules/dep/index.js": "module.exports = () => 'dep ok';\n",
        "index.js": "const dep = require('dep'); exports.handler = async () => dep();\n"})
    assert rt.invoke({}).json() == "dep ok"


def test_several_invocations_one_connection(start):
    rt = start("node", "index.handler", {"index.js": """
        let count = 0;
        exports.handler = async () => { count++; console.log('invocation', count); return count; };
    """})
    for i in range(1, 6):
        res = rt.invoke({}, request_id=f"r{i}")
        assert res.json() == i
        assert (f"r{i}", "INFO", f"invocation {i}") in log_lines(res.stdout_before)
    assert {r.conn_id for r in rt.api.requests} == {1}
    assert rt.api.conn_count == 1


@pytest.mark.parametrize("mode", ["header", "silent"])
def test_reconnects_when_connection_drops(start, mode):
    rt = start("node", "index.handler", ASYNC_HELLO)
    rt.api.close_after_post = mode
    for name in ("a", "b", "c"):
        assert rt.invoke({"name": name}).json() == {"hello": name}
    assert rt.api.conn_count >= 3


def test_large_payloads(start):
    rt = start("node", "index.handler", {"index.js": """
        exports.handler = async (event) => ({ n: event.data.length, echo: event.data });
    """})
    data = "é" * 1_000_000  # 2 MB of UTF-8 each way
    assert rt.invoke({"data": data}).json() == {"n": len(data), "echo": data}


# --- init errors ---------------------------------------------------------------

def _init_error(rt):
    assert rt.wait_exit() != 0
    assert rt.api.wait_for(lambda: rt.api.init_errors)
    req = rt.api.init_errors[0]
    assert not any(r.path.endswith("/next") for r in rt.api.requests)
    return req, req.json()


def test_init_error_import_module(start):
    rt = start("node", "missing.handler", ASYNC_HELLO)
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "Runtime.ImportModuleError"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"].startswith("Error: Cannot find module 'missing'\nRequire stack:")
    assert body["trace"][0] == "Runtime.ImportModuleError: Error: Cannot find module 'missing'"
    (rid, level, msg), = log_lines(rt.stderr)
    assert (rid, level) == ("undefined", "ERROR")
    assert msg.startswith('Uncaught Exception \t{"errorType":"Runtime.ImportModuleError"')


def test_init_error_handler_not_found(start):
    rt = start("node", "index.nope", ASYNC_HELLO)
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "index.nope is undefined or not exported"


def test_init_error_not_a_function(start):
    rt = start("node", "index.value", {"index.js": "exports.value = 42;\n"})
    _, body = _init_error(rt)
    assert body["errorType"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "index.value is not a function"


def test_init_error_malformed_handler(start):
    rt = start("node", "index", ASYNC_HELLO)
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "Runtime.MalformedHandlerName"
    assert body["errorMessage"] == "Bad handler"


def test_init_error_syntax(start):
    rt = start("node", "index.handler", {"index.js": "exports.handler = async () => {;\n"})
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "Runtime.UserCodeSyntaxError"
    assert body["errorMessage"].startswith("SyntaxError: ")


def test_init_error_thrown_at_load(start):
    rt = start("node", "index.handler", {"index.js": "throw new TypeError('bad config');\n"})
    req, body = _init_error(rt)
    assert req.headers["lambda-runtime-function-error-type"] == "TypeError"
    assert body["errorMessage"] == "bad config"
