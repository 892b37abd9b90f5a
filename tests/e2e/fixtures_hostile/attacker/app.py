"""The hostile function of tests/e2e/test_hostile.py (runtime python3.11, handler app.handler).

The event names an attack, {"attack": NAME, ...parameters}; the handler tries it and returns
what it observed: for every attempt either {"ok": true, ...} or {"errno": "EPERM", "error":
"..."}, so that the test can assert the exact error the function saw. Every answer also carries
"me": who and where the function is (uid, capabilities, no_new_privs, seccomp mode, namespace
ids, a random id drawn once per environment).

Nothing here cleans up after itself on purpose: containing the mess is the platform's job.

SAFETY INTERLOCK: the destructive attacks (kill(-1, SIGKILL), mounts, fork bomb, filling /tmp,
spinning) run only inside a nimbus jail: uid 993 without capabilities, under a PID 1 that is
the jail's init. Anywhere else (the `process` sandbox, a broken jail, someone running this file
by hand as root) they refuse with an error instead: kill(-1, SIGKILL) as root outside a PID
namespace kills every process of the machine.
"""

import ctypes
import errno
import os
import socket
import subprocess
import sys
import time
import uuid

ENV_ID = uuid.uuid4().hex  # one per execution environment (module load)
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long

# x86_64 syscall numbers
SYS = {
    "ptrace": 101, "mount": 165, "umount2": 166, "init_module": 175, "delete_module": 176,
    "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "setns": 308,
    "process_vm_readv": 310, "finit_module": 313, "clone": 56, "fsopen": 430,
}
CLONE_NEWNS, CLONE_NEWUSER, CLONE_PARENT, SIGCHLD = 0x00020000, 0x10000000, 0x00008000, 17
PTRACE_TRACEME, PTRACE_ATTACH, PTRACE_SEIZE = 0, 16, 0x4206


def errname(code):
    return errno.errorcode.get(code, str(code))


def attempt(fn, *args):
    """Runs one attempt: {"ok": True, "value": ...} or {"errno": NAME, "error": text}."""
    try:
        return {"ok": True, "value": fn(*args)}
    except OSError as e:
        return {"errno": errname(e.errno) if e.errno else None, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return {"errno": None, "error": f"{type(e).__name__}: {e}"}


def raw_syscall(name, *args):
    """A raw syscall through libc: {"ok": True, "value": ret} or {"errno": NAME}."""
    ctypes.set_errno(0)
    ret = LIBC.syscall(ctypes.c_long(SYS[name]), *[ctypes.c_long(a) if isinstance(a, int)
                                                    else a for a in args])
    if ret == -1:
        return {"errno": errname(ctypes.get_errno())}
    return {"ok": True, "value": ret}


def libc_call(fn, *args):
    ctypes.set_errno(0)
    ret = fn(*args)
    if ret == -1:
        return {"errno": errname(ctypes.get_errno())}
    return {"ok": True, "value": ret}


def status_field(name, pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


def ns_id(kind, pid="self"):
    link = os.readlink(f"/proc/{pid}/ns/{kind}")  # e.g. "pid:[4026532301]"
    return int(link[link.index("[") + 1:-1])


def jailed():
    """True only inside a nimbus jail (see SAFETY INTERLOCK above)."""
    try:
        with open("/proc/1/cmdline", "rb") as f:
            init = f.read().split(b"\0")
    except OSError:
        return False
    return (os.getuid() == os.geteuid() == 993 and status_field("CapEff") == "0" * 16
            and init[:2] == [b"/proc/self/exe", b"__jail"])


class NotJailed(Exception):
    pass


def destructive(fn):
    def guarded(event):
        if not jailed():
            raise NotJailed(f"refusing the destructive attack {fn.__name__!r} outside a "
                            "nimbus jail (uid 993, no capabilities, jail init as PID 1)")
        return fn(event)
    guarded.__name__ = fn.__name__
    return guarded


def me():
    return {
        "env_id": ENV_ID,
        "pid": os.getpid(),
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
        "groups": os.getgroups(),
        "cap_eff": status_field("CapEff"), "cap_prm": status_field("CapPrm"),
        "cap_bnd": status_field("CapBnd"), "cap_amb": status_field("CapAmb"),
        "no_new_privs": status_field("NoNewPrivs"), "seccomp": status_field("Seccomp"),
        "ns": {k: ns_id(k) for k in ("pid", "net", "mnt", "ipc", "uts", "cgroup")},
    }


def proc_pids():
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


# --------------------------------------------------------------------------------------
# attacks


def read_paths(event):
    """Tries to read (or list) each path of event["paths"]."""
    out = {}
    for path in event["paths"]:
        def read(p=path):
            if os.path.isdir(p):
                return {"listing": sorted(os.listdir(p))}
            with open(p, "rb") as f:
                return {"data": f.read(200).decode(errors="replace")}
        out[path] = attempt(read)
    return out


@destructive
def write_paths(event):
    """Tries to create each path of event["paths"] and write event["data"] into it."""
    out = {}
    for path in event["paths"]:
        def write(p=path):
            with open(p, "w") as f:
                f.write(event["data"])
            return True
        out[path] = attempt(write)
    return out


@destructive
def tamper_var_task(event):
    """Every way of changing the function's own code."""
    marker = event["marker"]
    return {
        "create": attempt(lambda: open(f"/var/task/{marker}", "w").write("x")),
        "overwrite_app": attempt(lambda: open("/var/task/app.py", "a").write("# pwned\n")),
        "unlink_app": attempt(os.unlink, "/var/task/app.py"),
        "rename_app": attempt(os.rename, "/var/task/app.py", f"/var/task/{marker}.py"),
        "chmod_app": attempt(os.chmod, "/var/task/app.py", 0o777),
        "mkdir": attempt(os.mkdir, f"/var/task/{marker}-dir"),
        "symlink": attempt(os.symlink, "/tmp", f"/var/task/{marker}-link"),
        "utime_app": attempt(os.utime, "/var/task/app.py", (0, 0)),
        "remount_rw": raw_syscall("mount", None, b"/var/task", None, 0x20 | 0x1000, None),
        "mountinfo": [line for line in open("/proc/self/mountinfo").read().splitlines()
                      if " /var/task " in line],
        "listing_after": sorted(os.listdir("/var/task")),
    }


@destructive
def fill_tmp(event):
    """Writes event["chunk_mb"] MiB files into /tmp until ENOSPC (or event["limit_mb"])."""
    chunk = b"\xa5" * (event.get("chunk_mb", 8) << 20)
    written, err, i = 0, None, 0
    st = os.statvfs("/tmp")
    size_mb = st.f_blocks * st.f_frsize >> 20
    while written < event.get("limit_mb", 4096) << 20:
        try:
            with open(f"/tmp/fill-{i}", "wb") as f:
                view = memoryview(chunk)
                while view:
                    n = f.write(view)
                    written += n
                    view = view[n:]
        except OSError as e:
            err = {"errno": errname(e.errno), "error": str(e)}
            break
        i += 1
    free_mb = os.statvfs("/tmp").f_bavail * os.statvfs("/tmp").f_frsize >> 20
    return {"written_mb": written / (1 << 20), "stopped_by": err, "tmp_size_mb": size_mb,
            "tmp_free_mb_after": free_mb}


@destructive
def allocate(event):
    """Touches event["mb"] MiB of anonymous memory, then reports that it survived."""
    block = bytearray(event["mb"] << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return {"survived": True, "allocated_mb": len(block) >> 20}


@destructive
def fork_bomb(event):
    """Every child forks forever; the handler forks until refused, then reports."""
    started = time.monotonic()
    forks, refused = 0, None
    while time.monotonic() - started < event.get("seconds", 20):
        try:
            pid = os.fork()
        except OSError as e:
            refused = {"errno": errname(e.errno), "error": str(e)}
            break
        if pid == 0:
            while True:  # the bomb: fork, fork, fork; park when refused
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.5)
        forks += 1
    time.sleep(0.5)
    return {"forks": forks, "refused": refused, "visible_pids": len(proc_pids()),
            "elapsed": time.monotonic() - started}


@destructive
def spin(event):
    """Burns CPU forever in the handler and in a child process."""
    if os.fork() == 0:
        while True:
            pass
    while True:
        pass


@destructive
def processes(event):
    """What other processes can be seen and signalled."""
    pids = proc_pids()
    cmdlines = {}
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmdlines[p] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError as e:
            cmdlines[p] = f"<{errname(e.errno)}>"
    server_pid = event["server_pid"]
    return {
        "pids": pids,
        "cmdlines": cmdlines,
        "ppid": os.getppid(),
        "proc_server_pid_exists": os.path.exists(f"/proc/{server_pid}"),
        "kill_server_0": attempt(os.kill, server_pid, 0),
        "kill_server_9": attempt(os.kill, server_pid, 9),
        "kill_init_9": attempt(os.kill, 1, 9),
        "kill_all_0": attempt(os.kill, -1, 0),
        # every process this uid may signal: on the host that would be every function of
        # every tenant (they all run as uid 993)
        "kill_all_9": attempt(os.kill, -1, 9),
        "kill_host_pids": {str(p): attempt(os.kill, p, 0) for p in event.get("host_pids", [])},
        "still_alive": True,
    }


def _tcp_listeners():
    """LISTEN sockets of this network namespace, as "addr:port" (IPv4 and IPv6)."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A":
                continue
            addr, port = f[1].split(":")
            if len(addr) == 8:
                host = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1])
            else:
                raw = bytes.fromhex(addr)
                host = socket.inet_ntop(socket.AF_INET6, b"".join(
                    raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            out.append({"addr": f"{host}:{int(port, 16)}", "inode": int(f[9])})
    return out


def network(event):
    """Connects to each [host, port] of event["targets"]; lists this namespace's listeners."""
    results = {}
    for host, port in event.get("targets", []):
        def connect(h=host, p=port):
            with socket.create_connection((h, p), timeout=event.get("timeout", 3)) as s:
                s.sendall(b"GET /nimbus/health HTTP/1.0\r\n\r\n")
                s.settimeout(3)
                try:
                    return {"connected": True, "reply": s.recv(200).decode(errors="replace")}
                except OSError as e:
                    return {"connected": True, "reply_error": errname(e.errno)}
        results[f"{host}:{port}"] = attempt(connect)
    return {"connect": results, "listeners": _tcp_listeners(),
            "interfaces": sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net")
            else open("/proc/net/dev").read().splitlines()[2:]}


@destructive
def mount(event):
    before = open("/proc/self/mountinfo").read()
    result = {
        "mount_tmpfs": libc_call(LIBC.mount, b"none", b"/tmp", b"tmpfs", ctypes.c_ulong(0), None),
        # an invalid pointer: the kernel itself would answer EFAULT; EPERM means the
        # seccomp filter refused before the kernel looked at the arguments
        "mount_bad_pointer": raw_syscall("mount", 1, 1, 1, 0, 0),
        "bind_root_over_tmp": libc_call(LIBC.mount, b"/", b"/tmp", None,
                                        ctypes.c_ulong(0x1000), None),
        "remount_root_rw": libc_call(LIBC.mount, None, b"/", None, ctypes.c_ulong(0x20), None),
        "umount_proc": libc_call(LIBC.umount2, b"/proc", 2),
        "fsopen_tmpfs": raw_syscall("fsopen", b"tmpfs", 0),
        "unshare_mount_ns": raw_syscall("unshare", CLONE_NEWNS),
    }
    p = subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "none", "/tmp"],
                       capture_output=True, text=True, timeout=20)
    result["mount_binary"] = {"rc": p.returncode, "stderr": p.stderr.strip()}
    result["mountinfo_unchanged"] = open("/proc/self/mountinfo").read() == before
    return result


@destructive
def modules(event):
    fd = os.open("/dev/zero", os.O_RDONLY)
    image = ctypes.create_string_buffer(b"\x7fELF" + b"\0" * 60)
    return {
        "init_module": raw_syscall("init_module", ctypes.addressof(image), 64,
                                   ctypes.c_char_p(b"")),
        "finit_module": raw_syscall("finit_module", fd, ctypes.c_char_p(b""), 0),
        "delete_module": raw_syscall("delete_module", ctypes.c_char_p(b"ext4"), 0o4000),
    }


def _run(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return {"rc": p.returncode, "stderr": p.stderr.strip()[-300:]}
    except OSError as e:
        return {"errno": errname(e.errno), "error": str(e)}


@destructive
def ptrace(event):
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    try:
        buf = ctypes.create_string_buffer(8)
        local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
        remote = (ctypes.c_void_p * 2)(id(buf), 8)
        return {
            "attach_init": raw_syscall("ptrace", PTRACE_ATTACH, 1, 0, 0),
            # the same uid, its own child: the kernel would allow it; only seccomp refuses
            "attach_own_child": raw_syscall("ptrace", PTRACE_ATTACH, child, 0, 0),
            "seize_own_child": raw_syscall("ptrace", PTRACE_SEIZE, child, 0, 0),
            # a pid that does not exist: the kernel would answer ESRCH
            "attach_missing_pid": raw_syscall("ptrace", PTRACE_ATTACH, 4194000, 0, 0),
            "traceme": raw_syscall("ptrace", PTRACE_TRACEME, 0, 0, 0),
            "process_vm_readv_child": raw_syscall("process_vm_readv", child,
                                                  ctypes.addressof(local), 1,
                                                  ctypes.addressof(remote), 1, 0),
            "child_status": status_field("State", child),
        }
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


def proc_root(event):
    return {
        "readlink_self_root": attempt(os.readlink, "/proc/self/root"),
        "self_root_is_root": os.stat("/proc/self/root/").st_ino == os.stat("/").st_ino,
        "self_root_shadow": attempt(lambda: open("/proc/self/root/etc/shadow").read()),
        "self_root_dotdot_shadow": attempt(
            lambda: open("/proc/self/root/../../../etc/shadow").read()),
        "self_root_listing": sorted(os.listdir("/proc/self/root/")),
        "self_cwd_dotdot": sorted(os.listdir("/proc/self/cwd/../../../..")),
        "init_root": attempt(os.listdir, "/proc/1/root/"),
        "init_root_shadow": attempt(lambda: open("/proc/1/root/etc/shadow").read()),
        "init_cwd": attempt(os.listdir, "/proc/1/cwd/"),
        "init_environ": attempt(lambda: open("/proc/1/environ", "rb").read()),
        "init_exe": attempt(lambda: open("/proc/1/exe", "rb").read(4)),
        "init_map_files": attempt(os.listdir, "/proc/1/map_files"),
        "data_dir_via_self_root": attempt(os.listdir, "/proc/self/root" + event["data_dir"]),
        "fd_walk": attempt(_dotdot_from_open_dirs),
    }


def _dotdot_from_open_dirs():
    """Walks ".." up from a directory descriptor opened on /var/task (openat escapes)."""
    fd = os.open("/var/task", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(12):
        nfd = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


@destructive
def setuid(event):
    """Runs setuid-root / setgid binaries and reads the credentials they actually got."""
    out = {"usr_mount_options": [line.split()[5] for line in
                                 open("/proc/self/mountinfo").read().splitlines()
                                 if line.split()[4] == "/usr"]}
    for name, argv in (("newgrp", ["/usr/bin/newgrp", "root"]),
                       ("su", ["/usr/bin/su", "-c", "id"]),
                       ("ssh_agent", ["/usr/bin/ssh-agent", "-D", "-a", "/tmp/agent.sock"])):
        st = os.stat(argv[0])
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        creds = None
        for _ in range(100):  # until it runs the binary (not our fork any more)
            try:
                if open(f"/proc/{p.pid}/comm").read().strip() == os.path.basename(argv[0]):
                    creds = {"Uid": status_field("Uid", p.pid), "Gid": status_field("Gid", p.pid)}
                    break
            except OSError:
                break
            time.sleep(0.02)
        p.kill()
        p.communicate()
        out[name] = {"mode": oct(st.st_mode), "owner": [st.st_uid, st.st_gid], "creds": creds}
    out["mount_binary"] = _run(["/usr/bin/mount", "-t", "tmpfs", "none", "/tmp"])
    out["setuid0"] = libc_call(LIBC.setuid, 0)
    out["setgid0"] = libc_call(LIBC.setgid, 0)
    return out


@destructive
def userns(event):
    r = {
        "unshare_user": raw_syscall("unshare", CLONE_NEWUSER),
        # unshare(0) is a no-op for the kernel: refusing it means the seccomp filter did
        "unshare_nothing": raw_syscall("unshare", 0),
        "unshare_binary": _run(["/usr/bin/unshare", "--user", "--map-root-user", "id"]),
        "setns": raw_syscall("setns", os.open("/proc/self/ns/user", os.O_RDONLY), 0),
    }
    ret = raw_syscall("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    if ret.get("ok") and ret["value"] == 0:
        os._exit(0)  # the child of a clone that should never have succeeded
    r["clone_newuser"] = ret
    # A child of our parent: for a runtime forked by the zygote, the server itself.
    ret = raw_syscall("clone", CLONE_PARENT | SIGCHLD, 0, 0, 0, 0)
    if ret.get("ok") and ret["value"] == 0:
        os._exit(0)
    r["clone_parent"] = ret
    return r


@destructive
def keyring(event):
    KEY_SPEC_SESSION, KEY_SPEC_USER = -3, -4
    return {
        "get_session_keyring": raw_syscall("keyctl", 0, KEY_SPEC_SESSION, 0),
        "get_user_keyring": raw_syscall("keyctl", 0, KEY_SPEC_USER, 0),
        "join_session_keyring": raw_syscall("keyctl", 1, 0),
        "read_user_keyring": raw_syscall("keyctl", 11, KEY_SPEC_USER, 0, 0),
        # an unknown operation: the kernel would answer EOPNOTSUPP
        "unknown_op": raw_syscall("keyctl", 9999, 0, 0),
        "add_key": raw_syscall("add_key", ctypes.c_char_p(b"user"), ctypes.c_char_p(b"k"),
                               ctypes.c_char_p(b"v"), 1, KEY_SPEC_SESSION),
        "request_key": raw_syscall("request_key", ctypes.c_char_p(b"user"),
                                   ctypes.c_char_p(b"k"), 0, 0),
        "proc_keys": attempt(lambda: open("/proc/keys").read()),
        "proc_key_users": attempt(lambda: open("/proc/key-users").read()),
    }


@destructive
def devices(event):
    return {
        "dev": sorted(os.listdir("/dev")),
        "dev_shm": attempt(os.listdir, "/dev/shm"),
        "sys": attempt(os.listdir, "/sys"),
        "mknod_block": attempt(os.mknod, "/tmp/vda", 0o600 | 0o060000, os.makedev(254, 0)),
        "mknod_mem": attempt(os.mknod, "/tmp/mem", 0o600 | 0o020000, os.makedev(1, 1)),
        "create_in_dev": attempt(lambda: open("/dev/evil", "w")),
        "open_host_disk": attempt(lambda: open("/dev/vda", "rb")),
        "open_kmsg": attempt(lambda: open("/dev/kmsg", "rb")),
        "proc_kcore": attempt(lambda: open("/proc/kcore", "rb").read(1)),
        "proc_kmsg": attempt(lambda: open("/proc/kmsg", "rb").read(1)),
        "proc_sysrq": attempt(lambda: open("/proc/sysrq-trigger", "w").write("h")),
    }


@destructive
def background(event):
    """Leaves a daemon behind: double fork, setsid, empty environment, then answers."""
    nonce = event["nonce"]
    r, w = os.pipe()  # both ends close-on-exec (Python's default)
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() == 0:
            os.close(r)
            os.write(w, str(os.getpid()).encode())  # w stays open until the execve
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.execve("/usr/bin/sleep", ["sleep", nonce], {})
        os._exit(0)
    os.close(w)
    os.waitpid(first, 0)
    # the pipe is close-on-exec: EOF means the daemon has become `sleep`
    data = b""
    while chunk := os.read(r, 32):
        data += chunk
    os.close(r)
    daemon = int(data)
    return {"daemon_pid": daemon, "daemon_cmdline": open(f"/proc/{daemon}/cmdline").read()}


def whoami(event):
    return {}


ATTACKS = {f.__name__: f for f in (
    read_paths, write_paths, tamper_var_task, fill_tmp, allocate, fork_bomb, spin, processes,
    network, mount, modules, ptrace, proc_root, setuid, userns, keyring, devices, background,
    whoami,
)}


def handler(event, context):
    result = ATTACKS[event["attack"]](event)
    result["me"] = me()
    sys.stdout.flush()
    return result
