"""Test harness: starts real ferryd processes on loopback ports and temporary
directories, and speaks the libvirt wire protocol for tests that need raw bytes.

Every daemon a test starts is stopped by PID at the end of the test; its log is
checked for sanitizer reports, so a leak or an overflow fails the test."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

BUILD = os.environ.get("FERRY_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build-asan"))
FERRYD = os.path.join(BUILD, "src/daemon/ferryd")
FERRY_VMM = os.path.join(BUILD, "src/vmm/ferry-vmm")
# FERRY_TEST_KEEP=DIR: each daemon's directory is copied into DIR before it
# is removed, for a post-mortem.
KEEP_DIR = "FERRY_TEST_KEEP"

REMOTE_PROGRAM = 0x20008086
KEEPALIVE_PROGRAM = 0x6B656570
CALL, REPLY, MESSAGE, STREAM = 0, 1, 2, 3
OK, ERROR, CONTINUE = 0, 1, 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One ferryd with its own config, sockets and state under a temp dir."""

    def __init__(self, extra_conf="", listen=True, name="ferryd", env=None, host="127.0.0.1",
                 prefix=None, run_dir=None):
        self.dir = tempfile.mkdtemp(prefix="ferry-test-")
        # Where its running instances' state lives (their VMMs' pid files and
        # monitors): cleanup() ends the VMMs it finds there.
        self.run_dir = run_dir or os.path.join(self.dir, "run")
        self.port = free_port()
        self.sock_dir = os.path.join(self.dir, "sock")
        self.sock = os.path.join(self.sock_dir, "libvirt-sock")
        self.sock_ro = os.path.join(self.sock_dir, "libvirt-sock-ro")
        self.conf = os.path.join(self.dir, "ferryd.conf")
        self.log_path = os.path.join(self.dir, name + ".log")
        self.name = name
        self.listen = listen
        self.env = env or {}  # extra environment (e.g. SASL_CONF_PATH)
        self.host = host      # where it listens (a test namespace's address, or loopback)
        self.prefix = prefix or []  # e.g. ["ip", "netns", "exec", NS]
        with open(self.conf, "w") as f:
            f.write(
                f'listen_tcp = 1\nlisten_addr = "{host}"\ntcp_port = {self.port}\n'
                f'auth_tcp = "none"\nunix_sock_dir = "{self.sock_dir}"\n'
                f'domain_config_dir = "{self.dir}/config"\ndomain_run_dir = "{self.run_dir}"\n'
                f'domain_log_dir = "{self.dir}/log"\nqemu_save_dir = "{self.dir}/save"\n'
                f'migration_address = "{host}"\nlog_level = 2\n'
                f'flight_record_dir = "{self.dir}/flight"\n' + extra_conf
            )
        self.proc = None

    @property
    def flight_dir(self):
        """Where this daemon writes its migration flight records."""
        return os.path.join(self.dir, "flight")

    @property
    def tcp_uri(self):
        return f"sim+tcp://{self.host}:{self.port}/system"

    @property
    def unix_uri(self):
        return f"sim+unix:///system?socket={self.sock}"

    def start(self, timeout=15):
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.update(self.env)
        args = [FERRYD, "--config", self.conf, "--pid-file", os.path.join(self.dir, "ferryd.pid")]
        if self.listen:
            args.append("--listen")
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.prefix + args, stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferryd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) if self.listen else \
                        socket.socket(socket.AF_UNIX) as s:
                    if not self.listen:
                        s.connect(self.sock)
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("ferryd did not start listening in time:\n" + self.log())

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=20):
        """SIGTERM, wait, and return the exit code; the log must hold no sanitizer report."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("ferryd did not stop within %ds of SIGTERM:\n%s" % (timeout, self.log()))
        self.logf.close()
        return rc

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self.proc.wait()
                self.logf.close()

    def sanitizer_report(self):
        text = self.log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in text:
                return text
        return None

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "logf", None) and not self.logf.closed:
            self.logf.close()
        # VMs outlive their daemon by design: end the ones this daemon started.
        import xml.etree.ElementTree as ET
        for path in list(instance_files(self).values()) + list(instance_files(self, "qemu").values()):
            try:
                pid = int(ET.parse(path).getroot().get("pid"))
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, TypeError, ET.ParseError):
                pass
        keep = os.environ.get(KEEP_DIR)
        if keep:  # for a post-mortem: the daemon's log, QEMU's logs, consoles, flight records
            subprocess.run(["cp", "-a", self.dir, os.path.join(keep, f"{os.path.basename(self.dir)}-{self.name}")],
                           capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


def virsh(uri, *args, timeout=60, check=True):
    """Runs the stock virsh; returns (rc, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("LIBVIRT_DEFAULT_URI", None)
    p = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p.returncode, p.stdout, p.stderr


# ---- raw wire protocol, for tests that need exact bytes ----

def xdr_string(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)


def message(prog, proc, mtype, serial, status=OK, payload=b"", vers=1):
    return struct.pack(">IIIiIII", 28 + len(payload), prog, vers, proc, mtype, serial, status) + payload


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def recv_message(sock):
    """Returns (header tuple, payload)."""
    (length,) = struct.unpack(">I", recv_exact(sock, 4))
    rest = recv_exact(sock, length - 4)
    hdr = struct.unpack(">IIiIII", rest[:24])
    return hdr, rest[24:]


def decode_error(payload):
    """Returns (code, domain, message) of a remote_error payload."""
    code, domain, has_msg = struct.unpack(">iiI", payload[:12])
    msg = None
    if has_msg:
        (n,) = struct.unpack(">I", payload[12:16])
        msg = payload[16:16 + n].decode()
    return code, domain, msg


class RawClient:
    """A hand-rolled client: sends exact bytes and reads exact replies."""

    def __init__(self, daemon, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=timeout)
        self.serial = 0

    def call(self, proc, payload=b"", prog=REMOTE_PROGRAM):
        serial = self.serial
        self.serial += 1
        self.sock.sendall(message(prog, proc, CALL, serial, OK, payload))
        while True:
            hdr, body = recv_message(self.sock)
            if hdr[0] == KEEPALIVE_PROGRAM:
                continue
            return hdr, body

    def open(self, uri="sim:///system"):
        self.call(66)
        hdr, body = self.call(1, struct.pack(">I", 1) + xdr_string(uri) + struct.pack(">I", 0))
        assert hdr[5] == OK, decode_error(body)

    def close(self):
        self.sock.close()


def wait_closed(sock, timeout):
    """True if the peer closes the socket within timeout (messages are drained)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def hostname_works(d):
    """A new client opens a connection and gets the host name."""
    c = RawClient(d, timeout=10)
    try:
        c.open()
        return c.call(59)[0][5] == OK  # GET_HOSTNAME
    finally:
        c.close()


# Every process a test starts (daemons, the VMMs they spawn, virsh, helpers)
# inherits this variable with the test's own value: what still carries it
# once the test is over is a process the test left behind.
PROCESS_TAG = "FERRY_TEST_PROCESS_TAG"


def tagged_processes(tag):
    """{pid: command line} of the live processes whose environment holds
    PROCESS_TAG=tag (zombies show no environment)."""
    want = f"{PROCESS_TAG}={tag}".encode()
    found = {}
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                if want not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{p}/cmdline", "rb") as f:
                found[int(p)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return found


class DaemonTestCase(unittest.TestCase):
    """Starts daemons on demand and checks each for a clean, sanitizer-clean
    stop, and that the test leaves no process of its own behind."""

    def setUp(self):
        self.daemons = []
        tag = f"{os.getpid()}-{self.id()}-{time.monotonic_ns()}"
        saved = os.environ.get(PROCESS_TAG)
        os.environ[PROCESS_TAG] = tag
        # The first cleanup registered runs last: after tearDown and every
        # other cleanup (namespaces, mounts) have ended what they own.
        self.addCleanup(self.no_process_left, tag, saved)

    def no_process_left(self, tag, saved):
        if saved is None:
            os.environ.pop(PROCESS_TAG, None)
        else:
            os.environ[PROCESS_TAG] = saved
        # A SIGKILLed VMM takes a moment to go.
        if wait_for(lambda: not tagged_processes(tag), 10):
            return
        left = tagged_processes(tag)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.fail("the test left processes behind (now killed): " +
                  "; ".join(f"{pid}: {cmd}" for pid, cmd in sorted(left.items())))

    def start_daemon(self, **kw):
        d = Daemon(**kw)
        self.daemons.append(d)
        return d.start()

    def tearDown(self):
        failures = []
        for d in self.daemons:
            # One daemon that does not stop must not leave the others running.
            try:
                rc = d.stop()
                if rc not in (0, None) and d.proc.returncode != -signal.SIGKILL:
                    failures.append(f"{d.name} exited with {rc}:\n{d.log()[-4000:]}")
                report = d.sanitizer_report()
                if report:
                    failures.append(f"{d.name} sanitizer report:\n{report[-8000:]}")
            except Exception as e:  # noqa: BLE001 - reported below, after the others stop
                failures.append(f"{d.name}: {e}"[-6000:])
            finally:
                d.cleanup()
        if failures:
            self.fail("\n".join(failures))


class ShapedLink:
    """Another "host" for a destination daemon: a network namespace reached
    over a veth pair, the link shaped with tbf (netem is not in this kernel).
    Names and a /30 of its own are picked per run from 10.OCTET.0.0/16, so
    two build trees running the same tests at once never share one."""

    def __init__(self, rate, octet, name="ferry"):
        import uuid
        tag = uuid.uuid4().hex[:6]
        self.ns = f"{name}-{tag}"
        self.veth = f"{name[:2]}{tag}"
        n = int(tag, 16) % 16384
        net = f"10.{octet}.{n // 64}"
        self.src_ip, self.dst_ip = f"{net}.{(n % 64) * 4 + 1}", f"{net}.{(n % 64) * 4 + 2}"
        self.prefix = ["ip", "netns", "exec", self.ns]  # runs a command in the namespace
        cmds = [
            ["ip", "netns", "add", self.ns],
            self.prefix + ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.veth + "p"],
            ["ip", "link", "set", self.veth + "p", "netns", self.ns],
            ["ip", "addr", "add", self.src_ip + "/30", "dev", self.veth],
            ["ip", "link", "set", self.veth, "up"],
            self.prefix + ["ip", "addr", "add", self.dst_ip + "/30", "dev", self.veth + "p"],
            self.prefix + ["ip", "link", "set", self.veth + "p", "up"],
            ["tc", "qdisc", "add", "dev", self.veth, "root", "tbf", "rate", rate, "burst",
             "256kb" if rate.endswith("gbit") else "64kb", "latency", "50ms"],
        ]
        try:
            for c in cmds:
                subprocess.run(c, check=True, capture_output=True, timeout=30)
        except Exception:
            self.remove()
            raise

    def remove(self):
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)


# ---- domains ----

def domain_xml(name, memory_mib=64, vcpus=1, uuid=None, dirty_rate=None, seed=None):
    meta = ""
    if dirty_rate is not None or seed is not None:
        attrs = ""
        if dirty_rate is not None:
            attrs += f" dirty-rate='{dirty_rate}'"
        if seed is not None:
            attrs += f" seed='{seed}'"
        meta = (f"  <metadata><ferry:workload xmlns:ferry='http://ferry.dev/xmlns/domain/1'{attrs}/>"
                "</metadata>\n")
    uuid_el = f"  <uuid>{uuid}</uuid>\n" if uuid else ""
    return (f"<domain type='sim'>\n  <name>{name}</name>\n{uuid_el}"
            f"  <memory unit='MiB'>{memory_mib}</memory>\n  <vcpu>{vcpus}</vcpu>\n"
            f"  <os><type>hvm</type></os>\n{meta}</domain>\n")


def write_file(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class Qmp:
    """A small QMP client (a ferry-vmm's or a QEMU's) that keeps the events it
    reads while waiting for replies, for wait_event()."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.timeout = timeout
        self.buf = b""
        self.events = []
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd, **args):
        """Runs a command; returns its `return`, raises RuntimeError with the error's desc."""
        self.sock.settimeout(self.timeout)
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(r["error"]["desc"])
            self.events.append(r)

    def wait_event(self, name, pred, timeout):
        """The first event `name` whose data satisfies pred (those already read
        first), or None after `timeout` s. Events looked at are consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e.get("event") == name and pred(e.get("data", {})):
                    self.events.remove(e)
                    return e
            self.events.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                self.events.append(self._read())
            except socket.timeout:
                return None

    def close(self):
        self.sock.close()


def instance_files(daemon, driver=""):
    """The runtime state files of running instances: {instance_id: path}.
    driver "qemu": the QEMU driver's (in run/qemu)."""
    run = os.path.join(daemon.run_dir, driver)
    if not os.path.isdir(run):
        return {}
    return {f[:-4]: os.path.join(run, f) for f in os.listdir(run) if f.endswith(".xml")}


def vmm_of(daemon, name, driver=""):
    """(pid, qmp path) of the running instance of domain `name`."""
    import xml.etree.ElementTree as ET
    for inst, path in instance_files(daemon, driver).items():
        root = ET.parse(path).getroot()
        if root.find("domain/name").text == name:
            return int(root.get("pid")), root.find("qmp").get("path")
    raise KeyError(f"no running instance of {name}")


def wait_for(predicate, timeout=10, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def hang_report(daemons, domain=None, uri_of=None):
    """What each daemon was doing when something it runs did not end: its
    threads (name, state, kernel wait channel), their stacks (gdb, when
    installed), the domain's job as virsh sees it (uri_of(d): the URI to ask
    it on) and the end of its log. For a failure message: a hang in CI is
    seen once, and this is all that is left of it."""
    out = []
    for d in daemons:
        pid = d.proc.pid if d.proc and d.proc.poll() is None else None
        out.append(f"==== {d.name} (pid {pid})")
        if pid:
            task = f"/proc/{pid}/task"
            for tid in sorted(os.listdir(task), key=int) if os.path.isdir(task) else []:
                def read(name, tid=tid):
                    try:
                        with open(f"{task}/{tid}/{name}") as f:
                            return f.read().strip()
                    except OSError:
                        return "?"
                state = read("stat").rsplit(")", 1)[-1].split()[:1]
                out.append(f"  thread {tid} {read('comm')}: {' '.join(state)} {read('wchan')}")
            if shutil.which("gdb"):
                try:
                    bt = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex",
                                         "thread apply all bt"], capture_output=True,
                                        text=True, timeout=120).stdout
                    out.append("\n".join(line for line in bt.splitlines()
                                          if line.startswith(("Thread ", "#"))))
                except subprocess.TimeoutExpired:
                    out.append("  (gdb did not answer within 120 s)")
            if domain and uri_of:
                try:
                    _, so, se = virsh(uri_of(d), "domjobinfo", domain, check=False, timeout=30)
                    out.append(f"  domjobinfo: {so.strip()} {se.strip()}")
                except subprocess.TimeoutExpired:
                    out.append("  domjobinfo: no answer within 30 s")
        out.append(d.log()[-6000:])
    return "\n".join(out)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


# ---- migration ----

JOB_STATS = r"""
import json, sys, libvirt
conn = libvirt.open(sys.argv[1])
dom = conn.lookupByName(sys.argv[2])
flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED if sys.argv[3] == "completed" else 0
print(json.dumps(dom.jobStats(flags)))
"""


def job_stats(daemon, name, completed=True):
    import json
    p = subprocess.run(["/usr/bin/python3", "-c", JOB_STATS, daemon.tcp_uri, name,
                        "completed" if completed else "current"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(p.stderr)
    return json.loads(p.stdout)


def start_migration(src, dst, name, *flags, tunnelled=True):
    """virsh migrate in the background (proxy mode with tunnelled=False); returns the Popen."""
    env = dict(os.environ)
    env.pop("LIBVIRT_DEFAULT_URI", None)
    mode = ["--tunnelled"] if tunnelled else []
    args = ["virsh", "-c", src.tcp_uri, "migrate", "--p2p", *mode, *flags, name, dst.tcp_uri]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def migrate(src, dst, name, *flags, timeout=180, tunnelled=True):
    p = start_migration(src, dst, name, *flags, tunnelled=tunnelled)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def wait_data_processed(daemon, name, at_least, timeout=60):
    """Waits until a running migration of `name` moved `at_least` bytes."""
    import re

    def moved():
        rc, out, _ = virsh(daemon.tcp_uri, "domjobinfo", name, check=False)
        m = re.search(r"Data processed:\s+([\d.]+) (\w+)", out)
        if not m:
            return 0
        units = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
        return float(m.group(1)) * units.get(m.group(2), 1)
    return wait_for(lambda: moved() >= at_least, timeout, 0.1)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def vmm_pids(daemon):
    import xml.etree.ElementTree as ET
    pids = []
    for path in instance_files(daemon).values():
        try:
            pids.append(int(ET.parse(path).getroot().get("pid")))
        except (OSError, ValueError, TypeError, ET.ParseError):
            pass
    return pids


def domstate(daemon, name):
    """`virsh domstate --reason`, e.g. "running (booted)"."""
    return virsh(daemon.tcp_uri, "domstate", "--reason", name)[1].strip()


def domain_names(daemon, *flags):
    """`virsh list --name` (add "--all" for inactive domains too)."""
    out = virsh(daemon.tcp_uri, "list", "--name", *flags)[1]
    return [l.strip() for l in out.splitlines() if l.strip()]


class MigrationFaultsMixin:
    """For fault tests between a source self.a and a destination self.b: a VM
    slow enough to act on mid-stream, and the check that it stayed home.
    The test class provides start_vm(daemon, name, memory_mib=, dirty_rate=)."""

    def slow_vm(self):
        # 256 MiB at 32 MiB/s: about 8 s of stream to act in.
        self.start_vm(self.a, "vm1", memory_mib=256, dirty_rate="4MiB")
        virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", "32")

    def frozen_destination_stalls_the_source(self, tunnelled):
        """With migration_stall_timeout = 2 on the source: the destination
        ferryd stopped (SIGSTOP) mid-stream fails the migration within 10 s,
        naming the stall, long before keepalive (30 s) or TCP (minutes) would,
        and the source keeps its VM."""
        self.slow_vm()
        p = start_migration(self.a, self.b, "vm1", "--live", tunnelled=tunnelled)
        self.assertTrue(wait_data_processed(self.a, "vm1", 16 << 20))
        self.b.kill(signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            _, err = p.communicate(timeout=60)
            self.assertLess(time.monotonic() - stopped, 10)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("the migration stalled: no data moved for 2 s", err)
            self.assertRegex(domstate(self.a, "vm1"), r"^running")
        finally:
            self.b.kill(signal.SIGCONT)
        self.check_vm_stayed_on_source()

    def abort_against_frozen_destination(self, tunnelled):
        """domjobabort with the destination ferryd stopped (SIGSTOP): the source
        VM runs again at once, the destination is told in the background, and it
        drops its incoming VM once it runs again."""
        self.slow_vm()
        p = start_migration(self.a, self.b, "vm1", "--live", tunnelled=tunnelled)
        self.assertTrue(wait_data_processed(self.a, "vm1", 16 << 20))
        incoming = vmm_pids(self.b)
        self.b.kill(signal.SIGSTOP)
        try:
            virsh(self.a.tcp_uri, "domjobabort", "vm1")
            aborted = time.monotonic()
            _, err = p.communicate(timeout=60)
            returned = time.monotonic() - aborted
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("operation aborted", err)
            self.assertRegex(domstate(self.a, "vm1"), r"^running")
            # The source no longer waits on the frozen peer (3 s for its abort
            # confirmation and 2 s to close the connection when tunnelled, a
            # 30 s cancel call in proxy mode); the target is 1 s.
            self.assertLess(returned, 2.5)
        finally:
            self.b.kill(signal.SIGCONT)
        for pid in incoming:
            self.assertTrue(wait_for(lambda: not pid_alive(pid), 60), pid)
        self.assertTrue(wait_for(lambda: "vm1" not in domain_names(self.b, "--all"), 10))

    def check_vm_stayed_on_source(self):
        self.assertTrue(wait_for(lambda: domstate(self.a, "vm1").startswith("running"), 10),
                        domstate(self.a, "vm1"))
        self.assertTrue(wait_for(lambda: "vm1" not in domain_names(self.b, "--all"), 30))


# ---- another host: a network namespace behind a veth pair ----

class Netns:
    """A network namespace of the test's own, joined to the root namespace by
    a veth pair: `src_ip` on the root side, `dst_ip` inside. Names and the
    /30 are picked under a lock so that tests running at once (here, or in
    another build tree) never share one. Links are shaped with tbf and cut
    with iptables inside the namespace (netem is not in this kernel)."""

    LOCK = "/tmp/ferry-test-netns.lock"

    def __init__(self):
        import fcntl
        import uuid
        with open(self.LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                                  text=True, timeout=30).stdout
            while True:
                tag = uuid.uuid4().hex[:6]
                n = int(tag, 16) % 16384
                net = f"10.213.{n // 64}"
                self.src_ip = f"{net}.{(n % 64) * 4 + 1}"
                self.dst_ip = f"{net}.{(n % 64) * 4 + 2}"
                if f" {self.src_ip}/" not in used:
                    break
            self.ns = f"ferry-{tag}"
            self.veth = f"fv{tag}"
            self.inner = self.veth + "p"
            cmds = [
                ["ip", "netns", "add", self.ns],
                ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.inner],
                ["ip", "link", "set", self.inner, "netns", self.ns],
                ["ip", "addr", "add", self.src_ip + "/30", "dev", self.veth],
                ["ip", "link", "set", self.veth, "up"],
            ]
            try:
                for c in cmds:
                    subprocess.run(c, check=True, capture_output=True, timeout=30)
            except Exception:
                self.close()
                raise
        for c in (["ip", "link", "set", "lo", "up"],
                  ["ip", "addr", "add", self.dst_ip + "/30", "dev", self.inner],
                  ["ip", "link", "set", self.inner, "up"]):
            self.run(*c)

    @property
    def prefix(self):
        return ["ip", "netns", "exec", self.ns]

    def run(self, *cmd, check=True):
        """A command inside the namespace."""
        return subprocess.run(self.prefix + list(cmd), check=check, capture_output=True,
                              text=True, timeout=30)

    def shape(self, rate="1gbit", burst="256kb", latency="50ms"):
        """tbf on the root side's end: what goes to the namespace."""
        subprocess.run(["tc", "qdisc", "replace", "dev", self.veth, "root", "tbf", "rate", rate,
                        "burst", burst, "latency", latency], check=True, capture_output=True,
                       timeout=30)

    def drop(self, probability=None):
        """Every packet in and out of the namespace dropped (or a random
        share of them): the path is dead, the sockets know nothing."""
        match = ["-m", "statistic", "--mode", "random", "--probability", str(probability)] \
            if probability else []
        for chain in ("INPUT", "OUTPUT"):
            self.run("iptables", "-w", "-I", chain, "-i" if chain == "INPUT" else "-o",
                     self.inner, *match, "-j", "DROP")

    def blip(self, seconds):
        """Every packet dropped for `seconds`, in one command inside the
        namespace, so that a loaded machine cannot stretch the blip."""
        rules = " && ".join(f"iptables -w -I {c} {'-i' if c == 'INPUT' else '-o'} {self.inner} -j DROP"
                            for c in ("INPUT", "OUTPUT"))
        self.run("sh", "-c", f"{rules} && sleep {seconds:.2f}; iptables -w -F INPUT; "
                             "iptables -w -F OUTPUT")

    def heal(self):
        for chain in ("INPUT", "OUTPUT"):
            self.run("iptables", "-w", "-F", chain)

    def listening_ports(self):
        """TCP ports listening inside the namespace."""
        out = self.run("ss", "-Hltn").stdout
        return sorted({int(l.split()[3].rsplit(":", 1)[1]) for l in out.splitlines() if l.strip()})

    def close(self):
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)
