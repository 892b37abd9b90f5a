"""Nimbus Python zygote: a pre-initialised interpreter that forks jailed runtimes.

Started by the server (as root, in the host's namespaces) as
    /usr/bin/python3 -S -B /dev/fd/4 RUNTIME_DIR
with this file open at fd 4 (so no host path shows in a runtime's /proc/self/cmdline),
RUNTIME_DIR the host directory the jails bind at /var/runtime (the bootstrap, which the
zygote imports and compiles once, as it appears there),
the variables that shape an interpreter at its start (PYTHONPATH, LANG, TZ, ...) set as
the functions it serves have them, and its control socket at fd 3, on which it says b"Z"
once it is ready.  A fresh `python3` costs ~9 ms of CPU before it runs a line of ours; a
fork of this one costs ~1 ms.  See docs/decisions/0010-interpreter-zygote.md.

The zygote itself never reads anything about a function: it only forks.  The fork reads
the environment's spec, so no function's variables ever sit in this process, whose later
forks serve other functions.

One process per environment, the runtime itself: the zygote clones it straight into the
jail's PID namespace with CLONE_PARENT, so the server is its parent and reads its end from
an ordinary child exit; nothing of ours watches it.  Per environment (all messages are
SOCK_SEQPACKET, so each arrives whole):
  server -> zygote (fd 3): b"F" + SCM_RIGHTS(conn, pidfd of the jail's init)
  zygote: joins the init's PID namespace for its children, clones the runtime
      (CLONE_PARENT), returns to its own; says b"P" + the runtime's pid (u32 LE, in the
      server's PID namespace) on conn, or b"E" + errno + step if it could not.
  server -> runtime (conn): b"C" + JSON list of cgroup.procs files  -> it joins them
  server -> runtime (conn): b"S" + u32 LE JSON length + JSON spec + the seccomp program
  runtime: setns into the init's mount, network, UTS, IPC and cgroup namespaces, takes the
      init's stdout/stderr (the environment's log pipe); with the spec's egress trigger,
      moves its connection to the trigger's exempt descriptor and installs the trigger on
      itself (the server then attaches outbound networking when the runtime first sends to
      an outside address); then the jailer's runtime_setup, step for step
      (nimbus-sys/src/jailer.rs): session, working directory, RLIMIT_NOFILE, capability
      bounding set, groups, gid, uid, ambient and other capabilities, no_new_privs, the
      seccomp filter (plus: dumpable again, and the exec'd command line and environment in
      /proc); says b"R" (with SCM_RIGHTS(the trigger's listener) if it has one) or
      b"E" + errno (i32 LE) + the failed step, closes conn, and runs the bootstrap as
      `python3 -S -B /var/runtime/bootstrap.py` would.

When the server closes fd 3 (it retires this zygote, or it is gone), the zygote exits: its
runtimes are the server's children, not its own.

Nothing imported here may seed state a fork must not share: `random` is not imported (an
e2e test checks that two environments draw different numbers).
"""

import sys

# This process is root on the host: while it imports, only the standard library is on the
# path (PYTHONPATH names directories of the jails, which on the host may hold anything).
_startup_path = sys.path[:]
sys.path[:] = [p for p in sys.path if p.startswith(sys.base_prefix + "/")]
import os  # noqa: E402
import _socket  # noqa: E402
import _signal  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
sys.path[:] = _startup_path

# Every foreign function a fork calls is looked up and typed here, once: a fork that did it
# itself would pay for it in copied pages.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.sbrk.restype = ctypes.c_void_p
_libc.sbrk.argtypes = [ctypes.c_long]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_libc.setrlimit.argtypes = [ctypes.c_int, ctypes.c_void_p]
# clone(2) without glibc's fork(): fork() cannot give the child our parent.  What glibc's
# and CPython's fork handlers would redo in the child matters only with other threads, and
# the zygote has none (glibc >= 2.34 signals the calling thread by its kernel id, so the
# thread id glibc caches, which the child does not update, is not used for raise()).
_clone = ctypes.CDLL(None, use_errno=True).syscall
_clone.restype = ctypes.c_long
_clone.argtypes = [ctypes.c_long] * 6

# Linux ABI numbers (x86_64 and the generic table agree on these).
_SYS_PIDFD_GETFD = 438
# clone(2): x86_64 and the generic table (aarch64) differ; with every pointer 0 the argument
# order does not matter.  Elsewhere the zygote does not start (the exec path serves).
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}[os.uname().machine]
_CLONE_PARENT = 0x00008000
_CLONE_NEWPID = 0x20000000
_PR_SET_DUMPABLE = 4
_PR_SET_SECCOMP = 22
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_SECCOMP_MODE_FILTER = 2
_SYS_SECCOMP = 317
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
_RLIMIT_NOFILE = 7
_CAP_VERSION_3 = 0x20080522
# The PID namespace is not among them: the runtime was cloned into it.
_JAIL_NAMESPACES = (0x00020000    # CLONE_NEWNS
                    | 0x40000000  # CLONE_NEWNET
                    | 0x04000000  # CLONE_NEWUTS
                    | 0x08000000  # CLONE_NEWIPC
                    | 0x02000000)  # CLONE_NEWCGROUP
_EINVAL = 22
with open("/proc/sys/kernel/cap_last_cap", "rb") as _f:
    _CAP_LAST = int(_f.read())  # higher numbers are EINVAL for PR_CAPBSET_DROP
_EIO = 5
_PR_SET_MM = 35
_PR_SET_MM_MAP = 14


class _StepError(Exception):
    def __init__(self, step, errno):
        super().__init__(step)
        self.step = step
        self.errno = errno


def _check(step, rc):
    if rc < 0:
        raise _StepError(step, ctypes.get_errno() or _EIO)
    return rc


def _os_step(step, fn, *args):
    try:
        return fn(*args)
    except OSError as e:
        raise _StepError(step, e.errno or _EIO) from None


def _prctl(step, option, a2=0, a3=0, a4=0, a5=0):
    return _check(step, _libc.prctl(option, a2, a3, a4, a5))


class _Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _MmMap(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
        "start_stack", "arg_start", "arg_end", "env_start", "env_end", "auxv")] + [
        ("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]


# The command line and environment C2 shows in /proc (kept alive: the kernel reads them
# from this memory whenever someone reads /proc/PID/cmdline or /proc/PID/environ).
_proc_areas = []


def _read_layout():
    """Fields 26-28 and 45-47 of proc(5) for this process: the same in every fork."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b") ", 1)[1].split()
    return {n: int(fields[n - 3]) for n in (26, 27, 28, 45, 46, 47)}  # from "state" (3)


_LAYOUT = None  # read by main(), before any fork


def _show_as_exec(argv, env):
    """Makes /proc/self/cmdline and /proc/self/environ what an exec'd runtime's would be
    (they would otherwise show the zygote's), as CRIU restores them: PR_SET_MM_MAP with the
    process's own layout and two new areas. Best effort: kernels without
    CONFIG_CHECKPOINT_RESTORE keep the zygote's."""
    try:
        value = _LAYOUT.__getitem__
        cmdline = ctypes.create_string_buffer(b"\0".join(a.encode() for a in argv) + b"\0")
        environ = ctypes.create_string_buffer(
            b"".join(f"{k}={v}".encode() + b"\0" for k, v in env))
        m = _MmMap(start_code=value(26), end_code=value(27), start_stack=value(28),
                   start_data=value(45), end_data=value(46), start_brk=value(47),
                   brk=_libc.sbrk(0) or value(47),
                   arg_start=ctypes.addressof(cmdline),
                   arg_end=ctypes.addressof(cmdline) + len(cmdline.raw) - 1,
                   env_start=ctypes.addressof(environ),
                   env_end=ctypes.addressof(environ) + len(environ.raw) - 1,
                   auxv=0, auxv_size=0, exe_fd=0xFFFFFFFF)
        if _libc.prctl(_PR_SET_MM, _PR_SET_MM_MAP, ctypes.addressof(m), ctypes.sizeof(m),
                       0) == 0:
            _proc_areas.extend((cmdline, environ))
    except Exception:  # noqa: BLE001  (cosmetic: never fail a start over it)
        pass


def _recv(sock, fds_wanted, size=1 << 18):
    """One message of at most `size` bytes and the descriptors that came with it."""
    data, ancillary, _flags, _addr = sock.recvmsg(size, _socket.CMSG_SPACE(4 * fds_wanted))
    fds = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(int.from_bytes(payload[i:i + 4], sys.byteorder, signed=True)
                       for i in range(0, usable, 4))
    return data, fds


def _runtime_setup(spec, seccomp):
    """Before any of the function's code: what the jailer's runtime_setup does."""
    _show_as_exec(spec["argv"], spec["env"])
    _os_step("start a session", os.setsid)
    _os_step("chdir to the working directory", os.chdir, spec["cwd"])
    limit = _Rlimit(spec["max_open_files"], spec["max_open_files"])
    _check("limit open files", _libc.setrlimit(_RLIMIT_NOFILE, ctypes.byref(limit)))
    for cap in range(_CAP_LAST + 1):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 and ctypes.get_errno() != _EINVAL:
            raise _StepError("drop the capability bounding set", ctypes.get_errno())
    _os_step("drop supplementary groups", os.setgroups, [])
    gid, uid = spec["gid"], spec["uid"]
    _os_step("set the gid", os.setresgid, gid, gid, gid)
    _os_step("set the uid", os.setresuid, uid, uid, uid)
    # No parent-death signal: the parent is the server, and the signal would fire when the
    # server *thread* that started this zygote ends.  The runtime dies with its jail.
    _prctl("clear ambient capabilities", _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check("drop capabilities", _libc.capset(ctypes.byref(header), ctypes.byref(data)))
    # Changing ids made us non-dumpable (our /proc files root's, our own environ unreadable);
    # an exec'd runtime is dumpable again after its exec. Nothing of anyone else's is in
    # this memory: the zygote's code and this function's spec.
    _prctl("make the runtime dumpable", _PR_SET_DUMPABLE, 1)
    _prctl("set no_new_privs", _PR_SET_NO_NEW_PRIVS, 1)
    if spec["seccomp"]:
        program = ctypes.create_string_buffer(seccomp, len(seccomp))
        fprog = _SockFprog(len(seccomp) // 8, ctypes.addressof(program))
        _prctl("install the seccomp filter", _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER,
               ctypes.addressof(fprog))


# The jail's view of the runtime directory; the bootstrap module and its entry script,
# loaded once in the zygote (by _preload).
_RUNTIME = "/var/runtime/"
_BOOTSTRAP = None
_ENTRY = None  # (path, code)


def _preload(host_dir):
    """Imports the bootstrap module and compiles the entry script as a runtime would find
    them at /var/runtime (host_dir, bound there in every jail this zygote serves): a fork
    finds both ready instead of unmarshalling them again."""
    global _BOOTSTRAP, _ENTRY
    name = "_nimbus_bootstrap"
    with open(os.path.join(host_dir, name + ".py"), "rb") as f:
        code = compile(f.read(), _RUNTIME + name + ".py", "exec", dont_inherit=True)
    module = type(sys)(name)
    module.__file__ = _RUNTIME + name + ".py"
    exec(code, module.__dict__)
    sys.modules[name] = module
    _BOOTSTRAP = module
    with open(os.path.join(host_dir, "bootstrap.py"), "rb") as f:
        _ENTRY = (_RUNTIME + "bootstrap.py",
                  compile(f.read(), _RUNTIME + "bootstrap.py", "exec", dont_inherit=True))


def _become_runtime(spec):
    """After its set-up: the state a fresh `python3 -S -B bootstrap.py` would have."""
    env = os.environ
    env.clear()
    for key, value in spec["env"]:
        env[key] = value
    script = spec["argv"][-1]
    sys.argv = [script]
    sys.orig_argv = list(spec["argv"])  # not the zygote's, which names a host directory
    # sys.path[0] is the script's directory; the rest (PYTHONPATH, the standard library)
    # is the zygote's, started with the same PYTHONPATH. Directories looked up on the host
    # may have been cached as missing.
    sys.path[0] = os.path.dirname(script)
    sys.path_importer_cache.clear()
    main = type(sys)("__main__")
    main.__file__ = script
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    if _ENTRY[0] == script:
        return _ENTRY[1], main.__dict__
    with open(script, "rb") as f:
        source = f.read()
    return compile(source, script, "exec", dont_inherit=True), main.__dict__


def _run_runtime(code, namespace):
    """Runs the bootstrap and ends the runtime as an interpreter's exit would. Never
    returns."""
    status = 0
    try:
        exec(code, namespace)
    except SystemExit as e:
        if e.code is None:
            status = 0
        elif isinstance(e.code, int):
            status = e.code
        else:
            print(e.code, file=sys.stderr)
            status = 1
    except BaseException:
        import traceback
        traceback.print_exc()
        status = 1
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status & 0xFF)


def _install_trigger(conn, trigger):
    """Moves `conn` to the trigger's exempt descriptor and installs the egress trigger on
    this process. Returns (conn, the listener or -1 if the kernel refused: the server then
    attaches egress itself)."""
    exempt = trigger["exempt_fd"]
    if conn.fileno() != exempt:
        try:
            os.dup2(conn.fileno(), exempt, inheritable=False)
        except OSError:  # e.g. RLIMIT_NOFILE below it: no trigger, the server attaches
            return conn, -1
        old = conn.detach()
        os.close(old)
        conn = _socket.socket(fileno=exempt)
    program = bytes(trigger["program"])
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    listener = _libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER,
                             _SECCOMP_FILTER_FLAG_NEW_LISTENER, ctypes.addressof(fprog))
    return conn, listener


def _runtime(conn_fd, init):
    """The runtime of one environment (cloned into its jail's PID namespace, the server's
    child): joins the jail, drops its privileges, reports, runs the bootstrap. Never
    returns."""
    conn = _socket.socket(fileno=conn_fd)
    try:
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        data, _ = _recv(conn, 0)
        if data[:1] != b"C":
            raise _StepError("receive the cgroups", _EIO)
        me = str(os.getpid()).encode()  # in the jail's PID namespace, as the kernel reads it
        for procs in _BOOTSTRAP._scan_once(data[1:].decode(), 0)[0]:
            fd = _os_step("join the environment's cgroup", os.open, procs, os.O_WRONLY)
            try:
                _os_step("join the environment's cgroup", os.write, fd, me)
            finally:
                os.close(fd)
        data, _ = _recv(conn, 0)
        if data[:1] != b"S":
            raise _StepError("receive the spec", _EIO)
        length = int.from_bytes(data[1:5], "little")
        spec = _BOOTSTRAP._scan_once(data[5:5 + length].decode(), 0)[0]
        seccomp = bytes(data[5 + length:])
        devnull = _os_step("open /dev/null", os.open, "/dev/null", os.O_RDWR)
        out = _check("take the log pipe", _libc.syscall(_SYS_PIDFD_GETFD, init, 1, 0))
        err = _check("take the log pipe", _libc.syscall(_SYS_PIDFD_GETFD, init, 2, 0))
        _check("join the jail's namespaces", _libc.setns(init, _JAIL_NAMESPACES))
        os.close(init)
        listener = -1
        if spec.get("egress_trigger"):
            conn, listener = _install_trigger(conn, spec["egress_trigger"])
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        keep = sorted({conn.fileno(), listener} - {-1})
        low = 3
        for fd in keep:
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 1 << 20)
        _runtime_setup(spec, seccomp)
        code, namespace = _become_runtime(spec)
    except _StepError as e:
        _send_quietly(conn, b"E" + e.errno.to_bytes(4, "little", signed=True) + e.step.encode())
        os._exit(127)
    except BaseException as e:
        _send_quietly(conn, b"E" + _EIO.to_bytes(4, "little") + f"zygote: {e!r}".encode())
        os._exit(127)
    try:
        if listener >= 0:
            conn.sendmsg([b"R"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                   listener.to_bytes(4, sys.byteorder))])
            os.close(listener)
        else:
            conn.sendall(b"R")
    except OSError:
        os._exit(127)  # the server gave up on this start
    conn.close()
    _run_runtime(code, namespace)


def _fork(conn_fd, init, own_pid_ns):
    """Clones the runtime of one environment into the PID namespace of the jail whose init
    `init` is, as a child of the server, and tells the server its pid."""
    conn = _socket.socket(fileno=conn_fd)
    try:
        if _libc.setns(init, _CLONE_NEWPID) < 0:
            raise _StepError("join the jail's PID namespace", ctypes.get_errno() or _EIO)
        pid = _clone(_SYS_CLONE, _CLONE_PARENT | _signal.SIGCHLD, 0, 0, 0, 0)
        if pid == 0:
            _runtime(conn.detach(), init)
        errno = ctypes.get_errno()
        if pid > 0:  # first: the server adopts it (and so reaps it) whatever happens next
            _send_quietly(conn, b"P" + pid.to_bytes(4, "little"))
        if _libc.setns(own_pid_ns, _CLONE_NEWPID) < 0:
            os._exit(70)  # never fork into a jail by mistake: the server starts another
        if pid < 0:
            raise _StepError("fork the runtime", errno or _EIO)
    except _StepError as e:
        _send_quietly(conn, b"E" + e.errno.to_bytes(4, "little", signed=True) + e.step.encode())
    finally:
        conn.close()
        os.close(init)


def _send_quietly(conn, message):
    try:
        conn.sendall(message)
    except OSError:
        pass


def main():
    global _LAYOUT
    # No parent-death signal: it would fire when the server *thread* that started us ends.
    # EOF on the control socket says the server is gone.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)
    os.close(4)  # this script
    _LAYOUT = _read_layout()
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    _preload(sys.argv[1])
    # Everything allocated so far stays out of the forks' garbage collections, which would
    # otherwise write to (and so copy) every shared page holding an object.
    gc.freeze()
    ctl = _socket.socket(fileno=3)
    ctl.sendall(b"Z")
    while True:
        try:
            data, fds = _recv(ctl, 2, 16)
        except InterruptedError:
            continue
        if not data:
            break  # retired, or the server is gone
        if data != b"F" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        _fork(fds[0], fds[1], own_pid_ns)
    # The runtimes are the server's children: nothing to wait for.
    os._exit(0)


if __name__ == "__main__":
    main()
