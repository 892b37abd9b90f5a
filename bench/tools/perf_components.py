#!/usr/bin/python3
"""Where the `nimbus serve` process spends its CPU, by server component, from a perf profile.

Usage: bench/tools/perf_components.py [PERF_DATA] [--pid PID]

Each sample of the server process is attributed to the first component found walking its
call stack from the root (the task being polled), and separately counted under every
cross-cutting item whose frame appears anywhere in the stack (so those overlap). Without
--pid, the process with the most samples in the `nimbus` binary is taken to be the server.
"""
import argparse
import collections
import subprocess

COMPONENTS = [
    ("log task (logs::run_stream)", "nimbus::logs::run_stream"),
    ("invocation task (invoke::Invoker)", "nimbus::invoke::Invoker"),
    ("Runtime API connections (runtime_api)", "nimbus::runtime_api"),
    ("front API connections (api::serve: HTTP, SigV4, routing)", "nimbus::api::serve"),
    ("other nimbus tasks", "nimbus::"),
    ("tokio scheduler (park, steal, wake)", "tokio::runtime::scheduler"),
    ("tokio blocking pool", "tokio::runtime::blocking"),
]
CROSS_CUTTING = [
    ("/proc/PID/status read (EnvProcess::max_memory_bytes)", "max_memory_bytes"),
    ("TCP send (tcp_sendmsg)", "tcp_sendmsg"),
    ("loopback TCP receive (net_rx_action, softirq)", "net_rx_action"),
    ("recvfrom", "__x64_sys_recvfrom"),
    ("epoll_wait", "__x64_sys_epoll_wait"),
    ("futex (thread wake / park)", "__x64_sys_futex"),
    ("hyper HTTP/1 parse", "Http1Transaction>::parse"),
    ("hyper HTTP/1 encode", "Http1Transaction>::encode"),
    ("SigV4 verify", "sigv4::verify"),
    ("malloc / free", "malloc"),
    ("log file writes (ext4)", "ext4_file_write_iter"),
    ("getrandom (uuid)", "getrandom"),
    ("serde_json", "serde_json::"),
]


def samples(data, pid=None):
    """Yields (pid, [frame lines, leaf first]) for every sample."""
    cmd = ["perf", "script", "-i", data, "-F", "pid,ip,sym,dso"]
    if pid:
        cmd += ["--pid", str(pid)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cur_pid, stack = None, []
    for line in out.splitlines():
        if not line.strip():
            if cur_pid is not None:
                yield cur_pid, stack
            cur_pid, stack = None, []
        elif not line.startswith(("\t", " ")):
            cur_pid, stack = line.split()[0], []
        else:
            stack.append(line.strip())
    if cur_pid is not None:
        yield cur_pid, stack


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default="/tmp/nimbus-perf.data")
    ap.add_argument("--pid", type=int)
    args = ap.parse_args()
    pid = args.pid
    if pid is None:
        in_nimbus = collections.Counter(
            p for p, st in samples(args.data) if st and "(/" in st[-1] and "/nimbus)" in " ".join(st)
        )
        if not in_nimbus:
            raise SystemExit("no samples in a `nimbus` binary; pass --pid")
        pid = int(in_nimbus.most_common(1)[0][0])
    comp, cross, kernel_leaf, n = collections.Counter(), collections.Counter(), 0, 0
    for _, st in samples(args.data, pid):
        n += 1
        for name, pat in COMPONENTS:
            if any(pat in f for f in reversed(st)):
                comp[name] += 1
                break
        else:
            comp["other (process start, signals)"] += 1
        for name, pat in CROSS_CUTTING:
            if any(pat in f for f in st):
                cross[name] += 1
        if st and st[0].startswith("ffffffff"):
            kernel_leaf += 1
    if n == 0:
        raise SystemExit(f"no samples for pid {pid}")
    print(f"{n} samples of the server process (pid {pid}); {100 * kernel_leaf / n:.1f} % in the kernel")
    print("by component (each sample once):")
    for name, c in comp.most_common():
        print(f"  {100 * c / n:5.1f} %  {name}")
    print("cross-cutting (a sample may count under several):")
    for name, c in cross.most_common():
        print(f"  {100 * c / n:5.1f} %  {name}")


if __name__ == "__main__":
    main()
