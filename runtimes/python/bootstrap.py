"""Nimbus python3.x runtime entry point: `/usr/bin/python3 -S -B bootstrap.py`.

The runtime itself is _nimbus_bootstrap.py.  It is a module rather than this
script because Python recompiles the __main__ script on every start (~4 ms,
a third of our cold start) but loads an imported module from its cached .pyc.
-B forbids writing that cache; we lift it for this one import so the .pyc is
written the first time the runtime directory is writable (write errors are
ignored when it is not, e.g. inside a sandbox).  Precompiling at install time
(`python3 -m compileall runtimes/python`) has the same effect.
"""
import sys

_no_pyc, sys.dont_write_bytecode = sys.dont_write_bytecode, False
import _nimbus_bootstrap  # noqa: E402
sys.dont_write_bytecode = _no_pyc  # user code runs with the platform's setting

_nimbus_bootstrap.main()
