"""Helpers shared by the interop tests: our transport-peer as a server, and reading a
process's output with a deadline."""
import os
import queue
import shlex
import sys
import subprocess
import threading
import time

# IOTGW_WRAPPER runs our binaries under e.g. valgrind (make check-valgrind sets it).
WRAPPER = shlex.split(os.environ.get("IOTGW_WRAPPER", ""))

_readers = {}


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readline_within(proc, seconds):
    """The next line of proc's stdout, or AssertionError after seconds. A thread reads
    the pipe, so that lines already buffered are not missed."""
    if proc not in _readers:
        q = queue.Queue()
        threading.Thread(target=lambda: [q.put(l) for l in proc.stdout], daemon=True,
                         name=f"reader-{proc.pid}").start()
        _readers[proc] = q
    try:
        return _readers[proc].get(timeout=seconds).strip()
    except queue.Empty:
        raise AssertionError("no output within %d s" % seconds) from None


def listening_ports(proc, count=1, seconds=20):
    """The device ports iotgw prints at start, one "listening: devices ADDRESS:PORT" line
    per listener, in the order of its configuration."""
    import re
    ports = []
    for _ in range(count):
        line = readline_within(proc, seconds)
        m = re.match(r"listening: devices \S+:(\d+)$", line)
        assert m, f"expected iotgw's listening line, got {line!r}"
        ports.append(int(m.group(1)))
    return ports


def output_of(proc, timeout):
    """Wait for proc to end; everything it printed after what readline_within() took
    (or all of it, if nothing was read that way)."""
    if proc not in _readers:
        out, _ = proc.communicate(timeout=timeout)
        return out
    proc.wait(timeout=timeout)
    lines, q, end = [], _readers[proc], time.time() + 10
    while time.time() < end:
        try:
            line = q.get(timeout=0.2)
        except queue.Empty:
            if proc.stdout.closed or not any(t.is_alive() for t in threading.enumerate()
                                              if t.name == f"reader-{proc.pid}"):
                break
            continue
        lines.append(line)
    return "".join(lines)


class LoggedProcess:
    """A daemon under test whose stderr goes to self.log: its log text, and a stop that
    insists on exit status 0 (valgrind or a sanitizer finding something exits 99)."""
    name = "process"

    def log_text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def wait_for_log(self, text, timeout=10):
        """Until text appears in the log; AssertionError with the log's end after timeout s."""
        end = time.time() + timeout
        while time.time() < end:
            if text in self.log_text():
                return
            time.sleep(0.05)
        raise AssertionError("%s never logged %r:\n%s" % (self.name, text, self.log_text()[-3000:]))

    def events(self, event=None, device=None):
        """The log's JSON lines (--log-format json) as objects, of one event and device if
        given; lines that are not JSON (a sanitizer's, say) are skipped."""
        import json
        out = []
        for line in self.log_text().splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if (event is None or j.get("event") == event) and (device is None or j.get("device") == device):
                out.append(j)
        return out

    def wait_event(self, event, device=None, where=lambda j: True, timeout=20):
        """The first such line for which where(line) holds, waiting up to timeout s."""
        end = time.time() + timeout
        while time.time() < end:
            found = [j for j in self.events(event, device) if where(j)]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"{self.name} never logged {event} for {device}:\n{self.log_text()[-3000:]}")

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        assert rc == 0, "%s exited %d:\n%s" % (self.name, rc, self.log_text()[-3000:])


class OurServer:
    """transport-peer serve: our WSS and AMQPS listeners on 127.0.0.1."""

    def __init__(self, peer, certs, messages, max_output=0, size=64):
        args = [peer, "serve", certs, str(messages), str(max_output), str(size)]
        self.proc = subprocess.Popen(WRAPPER + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = readline_within(self.proc, 20).split()
        assert line and line[0] == "LISTENING", line
        self.wss, self.amqps = (int(x.split("=")[1]) for x in line[1:3])

    def next_closed(self, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            line = readline_within(self.proc, max(1, end - time.time()))
            if line.startswith("CLOSED"):
                return dict(kv.split("=", 1) for kv in line.split()[1:])
        raise AssertionError("no CLOSED line from transport-peer")

    def stop(self):
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=30)
        assert rc == 0, "transport-peer serve exited %d" % rc


def run_tests():
    """Run the calling module's tests verbosely, end with the "N passed, N failed" line
    that quickstart sums, and exit non-zero on any failure. Test names left on the command
    line (Class or Class.test) run only those."""
    import unittest
    result = unittest.main(module="__main__", argv=[sys.argv[0], "-v"] + sys.argv[1:], exit=False).result
    failed = len(result.failures) + len(result.errors)
    # a failing setUpModule, setUpClass or tearDown* is an error of no test run: counted
    # as failed, never as fewer than no passes
    print(f"{max(result.testsRun - failed, 0)} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def with_fd_limit(soft, hard=None):
    """A command prefix that runs the command with RLIMIT_NOFILE soft and hard (hard
    defaults to soft, so that the process cannot raise it)."""
    code = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, "
            "(int(sys.argv[1]), int(sys.argv[2]))); os.execvp(sys.argv[3], sys.argv[3:])")
    return [sys.executable, "-c", code, str(soft), str(hard or soft)]


def cpu_seconds(pid):
    """The user and system CPU time a process has used (/proc/PID/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    """A process's resident memory (VmRSS in /proc/PID/status), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")
