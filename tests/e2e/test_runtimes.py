"""The runtime catalog: runtime ids map to interpreters, and more can be added by
configuration (the `[runtimes."<id>"]` tables of the server's TOML file)."""

from __future__ import annotations


import pytest
from botocore.exceptions import ClientError

from helpers import ROLE, error_code, error_status, node_zip, python_zip

CATALOG = """
[runtimes."python3.12"]
kind = "python"
interpreter = "/usr/bin/python3"

[runtimes."nodejs22.x"]
kind = "node"
interpreter = "/usr/bin/node"
"""


@pytest.fixture(scope="module")
def configured(make_module_server, tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "nimbus.toml"
    config.write_text(CATALOG)
    return make_module_server(extra_args=("--config", str(config)))


@pytest.mark.parametrize("runtime,zip_fn,handler", [
    ("python3.12", python_zip, "app.handler"),
    ("nodejs22.x", node_zip, "index.handler"),
])
def test_runtimes_added_by_configuration_run_functions(configured, runtime, zip_fn, handler):
    name = configured.create_function("catalog", runtime, zip_fn(), handler=handler)
    inv = configured.invoke(name, {"echo": runtime})
    assert inv.function_error is None, inv.payload
    assert inv.json()["echo"] == runtime
    env = configured.invoke(name, {"env": True}).json()
    assert env["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{runtime}"


def test_builtin_runtimes_remain_with_a_configured_catalog(configured):
    name = configured.create_function("builtin", "python3.11")
    assert configured.invoke(name, {"echo": 1}).json()["echo"] == 1


def test_runtime_outside_the_catalog_is_rejected(server):
    """Without configuration python3.12 is not offered: 400, nothing created."""
    name = server.name("nocatalog")
    with pytest.raises(ClientError) as exc:
        server.lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE,
                                   Handler="app.handler", Code={"ZipFile": python_zip()})
    assert error_status(exc.value) == 400
    assert error_code(exc.value) == "InvalidParameterValueException"


@pytest.mark.parametrize("runtime,expected", [
    ("python3.11", "AWS_Lambda_python3.11"),
    ("nodejs20.x", "AWS_Lambda_nodejs20.x"),
    ("provided.al2023", None),
])
def test_execution_env_variable(server, basic_functions, runtime, expected):
    env = server.invoke(basic_functions(runtime), {"env": True}).json()
    assert env.get("AWS_EXECUTION_ENV") == expected
