"""Nimbus managed runtime for python3.x: a Lambda Runtime API (2018-06-01) client.

Started by the platform as `/usr/bin/python3 -S -B bootstrap.py` with cwd =
LAMBDA_TASK_ROOT; bootstrap.py only imports this module and calls main().

Cold start is the whole point of this file, so it imports only modules that are
built in or nearly free (`_socket`, `_json`, `os`).  `socket` (pulls enum,
selectors, collections) and `json` (pulls re) would each cost 8-10 ms on our
machines, more than the rest of the startup together.  Heavier modules
(traceback, json, logging setup) are imported lazily on the paths that need them;
runtimes/tests checks that nothing else is imported before the first /next.

Behaviour follows the AWS Python runtime interface client (awslambdaric):
handler loading, error types/messages, error bodies, `[ERROR]` log lines, the
context object and the root-logger format.
"""

import sys
import os
import _socket

# --------------------------------------------------------------------------
# JSON via the C accelerator directly.  This is exactly what json.loads/dumps
# run internally (same output), minus the cost of importing json.decoder (re).
# Any decode failure is re-parsed with the real json module so users get the
# usual JSONDecodeError message; errors are rare, so the import cost is fine.
# --------------------------------------------------------------------------
try:
    import _json

    class _ScanContext:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = {"NaN": float("nan"), "Infinity": float("inf"),
                          "-Infinity": float("-inf")}.__getitem__
        memo = {}

    _scan_once = _json.make_scanner(_ScanContext())
    _encode_str = _json.encode_basestring_ascii

    def _json_loads(text):
        try:
            idx = len(text) - len(text.lstrip(" \t\n\r"))
            obj, end = _scan_once(text, idx)
            if not text[end:].strip(" \t\n\r"):
                return obj
        except Exception:
            pass
        import json
        return json.loads(text)

    def _json_dumps(obj):
        # Same arguments json.dumps() passes: check_circular, ensure_ascii,
        # separators (', ', ': '), allow_nan.
        encoder = _json.make_encoder({}, _json_default, _encode_str, None,
                                     ": ", ", ", False, False, True)
        return "".join(encoder(obj, 0))
except (ImportError, AttributeError, TypeError):  # not CPython: use the real thing
    def _json_loads(text):
        import json
        return json.loads(text)

    def _json_dumps(obj):
        import json
        return json.dumps(obj, default=_json_default)


def _json_default(obj):
    # awslambdaric serialises decimal.Decimal (what boto3's DynamoDB layer
    # returns) as a number; the stdlib encoder cannot emit raw text, so use
    # int/float.  Checked by name to avoid importing decimal.
    if type(obj).__name__ == "Decimal":
        if obj.is_nan():
            return float("nan")
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


# --------------------------------------------------------------------------
# Runtime API client: one keep-alive HTTP/1.1 connection on a raw socket.
# --------------------------------------------------------------------------
class _ConnectionLost(Exception):
    pass


class RuntimeClient:
    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")  # allow "[::1]:9001"
        self.port = int(port)
        self.host_header = address
        self.sock = None
        self.buf = b""

    def _connect(self):
        # The API is normally up before we start; retry briefly in case not.
        err = None
        for attempt in range(20):
            try:
                # bytes host: a str would load the idna codec (and with it re).
                family, kind, proto, _, addr = _socket.getaddrinfo(
                    self.host.encode(), self.port, 0, _socket.SOCK_STREAM)[0]
                sock = _socket.socket(family, kind, proto)
                # Without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per invoke.
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                sock.connect(addr)  # blocking, no timeout: /next must never time out
                self.sock, self.buf = sock, b""
                return
            except OSError as e:
                err = e
                import time
                time.sleep(0.005 * (attempt + 1))
        raise err

    def _close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.buf = None, b""

    def request(self, method, path, body=b"", headers=""):
        """Send one request (a single write) and return (status, headers, body).

        If the connection turns out to be dead before any byte of the reply
        arrived (e.g. the server closed an idle keep-alive connection),
        reconnect and send the request once more.
        """
        data = (f"{method} {path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                f"Content-Length: {len(body)}\r\n{headers}\r\n").encode("latin-1") + body
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
            try:
                self.sock.sendall(data)
                return self._read_response()
            except (OSError, _ConnectionLost):
                self._close()
                if attempt:
                    raise

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _ConnectionLost()
        return chunk

    def _read_response(self):
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            buf += self._recv()
            end = buf.find(b"\r\n\r\n")
        lines = buf[:end].decode("latin-1").split("\r\n")
        buf = buf[end + 4:]
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()

        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, buf = self._read_chunked(buf)
        else:
            length = int(headers.get("content-length", 0))
            parts, have = [buf], len(buf)
            while have < length:
                chunk = self._recv()
                parts.append(chunk)
                have += len(chunk)
            buf = b"".join(parts)
            body, buf = buf[:length], buf[length:]

        self.buf = buf
        if headers.get("connection", "").lower() == "close":
            self._close()
        return status, headers, body

    def _read_chunked(self, buf):
        body = []
        while True:
            end = buf.find(b"\r\n")
            while end < 0:
                buf += self._recv()
                end = buf.find(b"\r\n")
            size = int(buf[:end].split(b";")[0], 16)
            buf = buf[end + 2:]
            while len(buf) < size + 2:
                buf += self._recv()
            if size == 0:
                # skip trailers up to the blank line
                while not buf.startswith(b"\r\n"):
                    end = buf.find(b"\r\n")
                    while end < 0:
                        buf += self._recv()
                        end = buf.find(b"\r\n")
                    buf = buf[end + 2:]
                    while len(buf) < 2:
                        buf += self._recv()
                return b"".join(body), buf[2:]
            body.append(buf[:size])
            buf = buf[size + 2:]

    # -- Runtime API calls ---------------------------------------------------
    def next(self):
        status, headers, body = self.request("GET", "/2018-06-01/runtime/invocation/next")
        if status != 200:
            # 403/500 mean the platform wants this runtime gone.
            _stderr(f"[ERROR] Runtime API /next returned {status}: {body[:200]!r}\n")
            sys.exit(1)
        return headers, body

    def _post(self, path, body, headers):
        status, _, reply = self.request("POST", path, body, headers)
        if status >= 500:
            _stderr(f"[ERROR] Runtime API {path} returned {status}: {reply[:200]!r}\n")
            sys.exit(1)
        if status >= 300:  # e.g. 413 payload too large: the platform reports it to the caller
            _stderr(f"[WARNING] Runtime API {path} returned {status}: {reply[:200]!r}\n")

    def post_response(self, request_id, body, content_type):
        self._post(f"/2018-06-01/runtime/invocation/{request_id}/response", body,
                   f"Content-Type: {content_type}\r\n")

    def post_error(self, request_id, error):
        self._post(f"/2018-06-01/runtime/invocation/{request_id}/error",
                   _json_dumps(error).encode(),
                   "Content-Type: application/json\r\n"
                   "Lambda-Runtime-Function-Error-Type: Unhandled\r\n")

    def post_init_error(self, error):
        # The type goes into a header: keep it to safe ASCII (class names may be unicode).
        error_type = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_"
                             for c in error["errorType"])
        self._post("/2018-06-01/runtime/init/error", _json_dumps(error).encode(),
                   "Content-Type: application/json\r\n"
                   f"Lambda-Runtime-Function-Error-Type: {error_type}\r\n")


# --------------------------------------------------------------------------
# Output.  The platform reads the log pipe and expects everything printed
# during an invoke to be there before the response is posted.
# --------------------------------------------------------------------------
def _stderr(text):
    sys.stderr.write(text)
    sys.stderr.flush()


def _flush_output():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


def _format_error_log(error):
    """awslambdaric's text-format error log: `[ERROR] Type: message` then the traceback.

    (awslambdaric joins these lines with '\\r' and indents with U+00A0 so that
    CloudWatch keeps them as one event; we emit plain lines.)
    """
    lines = ["[ERROR] " + error["errorType"] + (": " + error["errorMessage"]
                                                if error["errorMessage"] else "")]
    lines.append("Traceback (most recent call last):")
    for frame in error["stackTrace"]:
        lines.extend(frame.splitlines())
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Errors.  Bodies are awslambdaric's {"errorMessage","errorType","requestId","stackTrace"}.
# --------------------------------------------------------------------------
class FaultException(Exception):
    def __init__(self, error_type, message, trace=None):
        super().__init__(message)
        self.error_type, self.message, self.trace = error_type, message, trace


def _make_error(message, error_type, stack_trace, request_id=""):
    return {"errorMessage": message or "", "errorType": error_type or "",
            "requestId": request_id or "", "stackTrace": stack_trace or []}


def _error_from_exception(exc, request_id=""):
    import traceback
    frames = traceback.extract_tb(exc.__traceback__)
    # Drop the runtime's own frames at the top, as awslambdaric does.
    for i, frame in enumerate(frames):
        if not frame.filename.startswith(_RUNTIME_DIR):
            frames = frames[i:]
            break
    return _make_error(str(exc), exc.__class__.__name__,
                       traceback.format_list(frames), request_id)


def _unhandled_warning():
    # The root-logger line awslambdaric logs before an init error.
    import time
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (now % 1 * 1000)
    return (f"[WARNING]\t{stamp}\t\tLAMBDA_WARNING: Unhandled exception. The most likely cause "
            "is an issue in the function code. However, in rare cases, a Lambda runtime update "
            "can cause unexpected function behavior. For functions using managed runtimes, "
            "runtime updates can be triggered by a function change, or can be applied "
            "automatically. To determine if the runtime has been updated, check the runtime "
            "version in the INIT_START log entry. If this error correlates with a change in the "
            "runtime version, you may be able to mitigate this error by temporarily rolling back "
            "to the previous runtime version. For more information, see "
            "https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html\n")


# --------------------------------------------------------------------------
# Handler loading (awslambdaric's _get_handler).
# --------------------------------------------------------------------------
def load_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultException("Runtime.MalformedHandlerName",
                             f"Bad handler '{handler}': {e}")
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultException("Runtime.BuiltInModuleConflict",
                                 f"Cannot use built-in module {modname} as a handler module")
        name = modname.replace("/", ".")
        __import__(name)  # importlib would be one more import
        module = sys.modules[name]
    except ImportError as e:
        raise FaultException("Runtime.ImportModuleError",
                             f"Unable to import module '{modname}': {e}")
    except SyntaxError as e:
        raise FaultException("Runtime.UserCodeSyntaxError",
                             f"Syntax error in module '{modname}': {e}",
                             ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)])
    try:
        return getattr(module, fname)
    except AttributeError:
        raise FaultException("Runtime.HandlerNotFound",
                             f"Handler '{fname}' missing on module '{modname}'")


# --------------------------------------------------------------------------
# Context object (awslambdaric's LambdaContext).
# --------------------------------------------------------------------------
def _obj_from_dict(cls, d):
    if d is None:
        return None
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, d.get(field))
    return obj


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __repr__(self):
        return (f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
                f"cognito_identity_pool_id={self.cognito_identity_pool_id}])")


class Client:
    __slots__ = ("installation_id", "app_title", "app_version_name",
                 "app_version_code", "app_package_name")

    def __repr__(self):
        return "Client([" + ",".join(f"{f}={getattr(self, f)}" for f in self.__slots__) + "])"


class ClientContext:
    __slots__ = ("custom", "env", "client")

    def __repr__(self):
        return f"ClientContext([custom={self.custom},env={self.env},client={self.client}])"


class LambdaContext:
    def __init__(self, request_id, deadline_ms, invoked_function_arn,
                 client_context, cognito_identity, tenant_id):
        env = os.environ
        self.aws_request_id = request_id
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = _MEMORY_SIZE
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        # awslambdaric always provides an identity object (fields None without the header).
        self.identity = _obj_from_dict(CognitoIdentity, {})
        if cognito_identity is not None:
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get("cognitoIdentityPoolId")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        from time import time
        remaining = self._deadline_ms - int(time() * 1000)
        return remaining if remaining > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return ("LambdaContext([" + ",".join(f"{k}={getattr(self, k)}" for k in (
            "aws_request_id", "log_group_name", "log_stream_name", "function_name",
            "memory_limit_in_mb", "function_version", "invoked_function_arn",
            "client_context", "identity", "tenant_id")) + "])")


def _memory_size():
    # As awslambdaric: the environment's string, e.g. "128" (handlers int() it).
    return os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")


# Read by main(), not at import: the module may be imported before the environment is the
# function's (the zygote, _nimbus_zygote.py, imports it once for all its forks).
_MEMORY_SIZE = None


# --------------------------------------------------------------------------
# Root logger setup, exactly as the managed runtime configures it, but only
# once user code imports `logging` (importing it ourselves costs ~3 ms).  A
# meta-path hook runs the setup right after logging's module body, before the
# user's next statement, so module-level logging.basicConfig() is a no-op and
# records carry the Lambda format, as on AWS.
# --------------------------------------------------------------------------
_CURRENT_REQUEST_ID = None


def _setup_logging(logging):
    import time
    logging.Formatter.converter = time.gmtime

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record):
            sys.stdout.write(self.format(record))

    class LambdaLoggerFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _CURRENT_REQUEST_ID or ""
            return True

    handler = LambdaLoggerHandler()
    handler.setFormatter(logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
        "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(LambdaLoggerFilter())
    root = logging.getLogger()
    level = (os.environ.get("AWS_LAMBDA_LOG_LEVEL") or "").upper()
    if level in logging._nameToLevel:
        root.setLevel(level)
    root.addHandler(handler)


class _LoggingImportHook:
    done = False

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "logging" or cls.done:
            return None
        cls.done = True  # (not removed from sys.meta_path: the import system is iterating it)
        spec = _PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_setup(module):
            exec_module(module)
            _setup_logging(module)

        spec.loader.exec_module = exec_then_setup  # the loader belongs to this spec only
        return spec


_PathFinder = sys.modules["_frozen_importlib_external"].PathFinder  # already loaded: free


# --------------------------------------------------------------------------
# Main loop
# --------------------------------------------------------------------------
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + "/"


def _setup_sys_path(task_root):
    # Lambda's order: task root, then layer dirs, then PYTHONPATH/stdlib.
    # Drop our own directory (sys.path[0]) so `import bootstrap` can't hit us.
    here = os.path.abspath(__file__)
    own_dirs = (os.path.dirname(here), os.path.dirname(os.path.realpath(here)))
    path = [p for p in sys.path if p not in own_dirs]
    v = sys.version_info
    front = [task_root] + [p for p in (f"/opt/python/lib/python{v[0]}.{v[1]}/site-packages",
                                        "/opt/python") if os.path.isdir(p)]
    sys.path[:] = front + [p for p in path if p not in front]


def _parse_json_header(headers, header, name):
    value = headers.get(header)
    if not value:
        return None
    try:
        return _json_loads(value)
    except Exception as e:
        raise FaultException("Runtime.LambdaContextUnmarshalError",
                             f"Unable to parse {name} JSON: {e}")


def handle_invoke(client, handler, headers, body):
    global _CURRENT_REQUEST_ID
    request_id = headers.get("lambda-runtime-aws-request-id", "")
    _CURRENT_REQUEST_ID = request_id
    trace_id = headers.get("lambda-runtime-trace-id")
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)

    error = None
    try:
        client_context = _parse_json_header(headers, "lambda-runtime-client-context",
                                            "Client Context")
        identity = _parse_json_header(headers, "lambda-runtime-cognito-identity",
                                      "Cognito Identity")
        context = LambdaContext(request_id, int(headers.get("lambda-runtime-deadline-ms") or 0),
                                headers.get("lambda-runtime-invoked-function-arn"),
                                client_context, identity,
                                headers.get("lambda-runtime-aws-tenant-id"))
        content_type = headers.get("content-type", "application/json")
        if content_type.startswith("application/json"):
            try:
                event = _json_loads(body.decode("utf-8")) if body.strip() else None
            except Exception as e:
                raise FaultException("Runtime.UnmarshalError", f"Unable to unmarshal input: {e}")
        else:
            event = body

        result = handler(event, context)

        if isinstance(result, bytes):
            payload, payload_type = result, "application/unknown"
        else:
            try:
                payload, payload_type = _json_dumps(result).encode(), "application/json"
            except Exception as e:
                raise FaultException("Runtime.MarshalError", f"Unable to marshal response: {e}")
    except FaultException as e:
        error = _make_error(e.message, e.error_type, e.trace, request_id)
    except Exception as e:
        error = _error_from_exception(e, request_id)

    if error is None:
        _flush_output()
        client.post_response(request_id, payload, payload_type)
    else:
        sys.stdout.write(_format_error_log(error))
        _flush_output()
        client.post_error(request_id, error)


def main():
    global _MEMORY_SIZE
    _MEMORY_SIZE = _memory_size()
    # Line-buffered output keeps print() lines in order with the invoke;
    # we also flush explicitly before every post.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass

    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    _setup_sys_path(task_root)
    sys.meta_path.insert(0, _LoggingImportHook)

    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])

    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except FaultException as e:
        error = _make_error(e.message, e.error_type, e.trace)
    except Exception as e:  # anything else raised by the module's top-level code
        error = _error_from_exception(e)
    else:
        error = None
    if error is not None:
        _flush_output()
        _stderr(_unhandled_warning() + _format_error_log(error))
        client.post_init_error(error)
        sys.exit(1)

    while True:
        headers, body = client.next()
        handle_invoke(client, handler, headers, body)

