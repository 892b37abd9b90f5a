"""Fixtures of the end-to-end suite.

The suite drives the real `nimbus` binary (env NIMBUS_BIN, default target/debug/nimbus) with
boto3, the AWS CLI (`aws` on PATH) and raw SigV4 requests. The sandbox backend comes from env
NIMBUS_SANDBOX (default `jail`, as the server), so the same suite runs against the jail.
"""

from __future__ import annotations

import contextlib

import pytest

import helpers
from helpers import RUNTIMES, SERVER_SECRET_ENV, Server


@contextlib.contextmanager
def running_server(**kw):
    server = Server(**kw)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def server():
    """The shared server: default settings, a secret in its own environment."""
    with running_server(env=dict([SERVER_SECRET_ENV])) as s:
        yield s


class ServerFactory:
    def __init__(self):
        self._stack = contextlib.ExitStack()

    def __call__(self, **kw) -> Server:
        return self._stack.enter_context(running_server(**kw))

    def close(self):
        self._stack.close()


@pytest.fixture
def make_server():
    """Starts extra servers (options as for helpers.Server) that are killed after the test."""
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def make_module_server():
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def basic_functions(server):
    """One function per runtime on the shared server, speaking the common test protocol
    (see tests/functions/*/basic): memory 256 MB, timeout 10 s, MY_VAR=hello."""
    created = {}

    def get(runtime: str) -> str:
        if runtime not in created:
            created[runtime] = server.create_function(
                "basic-" + runtime.replace(".", ""), runtime,
                MemorySize=256, Timeout=10,
                Environment={"Variables": {"MY_VAR": "hello"}},
            )
        return created[runtime]

    return get


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        for s in list(helpers.LIVE_SERVERS):
            report.sections.append((f"nimbus server log ({s.endpoint})", s.log_tail(60)))
