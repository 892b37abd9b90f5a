"""A small fake Lambda Runtime API (2018-06-01) for testing the runtime bootstraps.

* queues events; `GET /runtime/invocation/next` blocks until one is queued and
  answers with the usual Lambda headers;
* records every request (connection number, method, path, headers, body) and
  the `/response`, `/error` and `/init/error` posts;
* checks the HTTP framing strictly: every request must carry an exact
  Content-Length (a body shorter than announced times out, a longer one
  leaves garbage that fails to parse as the next request line) — such
  problems land in `protocol_errors`;
* when a runtime process is attached, drains its stdout/stderr pipes at the
  moment each request arrives, so a test can check what had been printed
  *before* the runtime posted its response.

Raw sockets and threads only, so it also serves as a reference for what the
platform must tolerate.
"""

import json
import os
import queue
import select
import socket
import threading
import time
import uuid

BODY_TIMEOUT = 2.0  # seconds to wait for the rest of a body before calling it truncated


class Request:
    def __init__(self, conn_id, method, path, headers, body):
        self.conn_id = conn_id
        self.method = method
        self.path = path
        self.headers = headers  # lower-case names
        self.body = body
        self.stdout_before = ""  # runtime stdout captured when this request arrived
        self.stderr_before = ""

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.method} {self.path} conn={self.conn_id} {self.body[:80]!r}>"


class OutputCapture:
    """Drains a child's stdout/stderr pipes into strings, on demand and in the background."""

    def __init__(self, proc):
        self.proc = proc
        self.lock = threading.Lock()
        self.data = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        self.fds = list(self.data)
        for fd in self.fds:
            os.set_blocking(fd, False)
        self.open = set(self.fds)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def drain(self):
        with self.lock:
            for fd in list(self.open):
                while True:
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    except OSError:
                        chunk = b""
                    if not chunk:
                        self.open.discard(fd)
                        break
                    self.data[fd] += chunk

    def _loop(self):
        while self.open:
            try:
                select.select(list(self.open), [], [], 0.05)
            except (OSError, ValueError):
                return
            self.drain()

    @property
    def stdout(self):
        self.drain()
        return self.data[self.fds[0]].decode("utf-8", "replace")

    @property
    def stderr(self):
        self.drain()
        return self.data[self.fds[1]].decode("utf-8", "replace")


class FakeRuntimeAPI:
    def __init__(self, function_arn="arn:aws:lambda:us-east-1:123456789012:function:test-fn"):
        self.function_arn = function_arn
        self.events = queue.Queue()
        self.requests = []
        self.responses = {}   # request id -> Request
        self.errors = {}      # request id -> Request
        self.init_errors = []
        self.protocol_errors = []
        self.next_times = []  # time.monotonic() of each GET /next arrival
        # After each /response or /error reply: None = keep-alive, "header" = send
        # `Connection: close` and close, "silent" = close without warning (as an
        # idle-timeout would), so the runtime only notices on its next request.
        self.close_after_post = None
        self.capture = None
        self.cond = threading.Condition()
        self.stopping = False
        self.conn_count = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    # -- test-facing API -------------------------------------------------------
    def push(self, event, request_id=None, deadline_ms=None, client_context=None,
             cognito_identity=None, trace_id=None, raw=False, extra_headers=None):
        """Queue an event; returns its request id."""
        request_id = request_id or str(uuid.uuid4())
        body = event if raw else json.dumps(event).encode()
        headers = {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms or int(time.time() * 1000) + 30000),
            "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
            "Content-Type": "application/json",
        }
        if client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = json.dumps(client_context)
        if cognito_identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = json.dumps(cognito_identity)
        if trace_id is not None:
            headers["Lambda-Runtime-Trace-Id"] = trace_id
        headers.update(extra_headers or {})
        self.events.put((request_id, headers, body))
        return request_id

    def attach(self, proc):
        self.capture = OutputCapture(proc)

    def wait_for(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.05))
        return True

    def wait_result(self, request_id, timeout=10.0):
        """The /response or /error Request for an invocation."""
        ok = self.wait_for(lambda: request_id in self.responses or request_id in self.errors,
                           timeout)
        assert ok, (f"no result for {request_id}; requests={self.requests} "
                    f"protocol_errors={self.protocol_errors} "
                    f"stdout={self.capture and self.capture.stdout!r} "
                    f"stderr={self.capture and self.capture.stderr!r}")
        return self.responses.get(request_id) or self.errors[request_id]

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass

    # -- server ----------------------------------------------------------------
    def _accept_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conn_count += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, self.conn_count), daemon=True).start()

    def _protocol_error(self, msg):
        with self.cond:
            self.protocol_errors.append(msg)
            self.cond.notify_all()

    def _serve(self, conn, conn_id):
        buf = b""
        try:
            while not self.stopping:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3 or parts[2] != "HTTP/1.1" or parts[0] not in ("GET", "POST"):
                    self._protocol_error(f"bad request line {lines[0]!r} (conn {conn_id})")
                    return
                method, path, _ = parts
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if "content-length" not in headers:
                    self._protocol_error(f"{method} {path}: no Content-Length")
                    length = 0
                else:
                    length = int(headers["content-length"])
                conn.settimeout(BODY_TIMEOUT)
                try:
                    while len(buf) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            self._protocol_error(f"{method} {path}: connection closed mid-body")
                            return
                        buf += chunk
                except socket.timeout:
                    self._protocol_error(
                        f"{method} {path}: body shorter than Content-Length {length}")
                    return
                finally:
                    conn.settimeout(None)
                body, buf = buf[:length], buf[length:]
                if not self._dispatch(conn, conn_id, method, path, headers, body):
                    return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _record(self, req):
        if self.capture is not None:
            req.stdout_before = self.capture.stdout
            req.stderr_before = self.capture.stderr
        with self.cond:
            self.requests.append(req)
            self.cond.notify_all()

    def _reply(self, conn, status, reason, body=b"", headers=None, close=False):
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        if close:
            head += "Connection: close\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode("latin-1") + body)

    def _dispatch(self, conn, conn_id, method, path, headers, body):
        """Handle one request; returns False to drop the connection."""
        req = Request(conn_id, method, path, headers, body)
        prefix = "/2018-06-01/runtime/"
        accepted = b'{"status":"OK"}'
        if method == "GET" and path == prefix + "invocation/next":
            self.next_times.append(time.monotonic())
            self._record(req)
            while True:
                try:
                    request_id, ev_headers, ev_body = self.events.get(timeout=0.05)
                    break
                except queue.Empty:
                    if self.stopping:
                        return False
            self._reply(conn, 200, "OK", ev_body, ev_headers)
            return True

        if method == "POST" and path == prefix + "init/error":
            self._record(req)
            with self.cond:
                self.init_errors.append(req)
            self._reply(conn, 202, "Accepted", accepted)
            return True

        if method == "POST" and path.startswith(prefix + "invocation/"):
            request_id, _, kind = path[len(prefix + "invocation/"):].partition("/")
            if kind in ("response", "error"):
                if kind == "error" or headers.get("content-type", "").startswith("application/json"):
                    try:
                        json.loads(body)  # a wrong Content-Length would truncate it
                    except ValueError as e:
                        self._protocol_error(f"{path}: body is not JSON ({e}): {body[:200]!r}")
                self._record(req)
                with self.cond:
                    (self.responses if kind == "response" else self.errors)[request_id] = req
                    self.cond.notify_all()
                self._reply(conn, 202, "Accepted", accepted,
                            close=self.close_after_post == "header")
                return not self.close_after_post

        self._record(req)
        self._protocol_error(f"unknown route {method} {path}")
        self._reply(conn, 404, "Not Found", b'{"errorType":"NotFound"}')
        return True
