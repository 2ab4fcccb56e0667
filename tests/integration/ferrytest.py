"""Test harness: starts real ferryd processes on loopback ports and temporary
directories, and speaks the libvirt wire protocol for tests that need raw bytes.

Every daemon a test starts is stopped by PID at the end of the test; its log is
checked for sanitizer reports, so a leak or an overflow fails the test."""

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

    def __init__(self, extra_conf="", listen=True, name="ferryd", env=None):
        self.dir = tempfile.mkdtemp(prefix="ferry-test-")
        self.port = free_port()
        self.sock_dir = os.path.join(self.dir, "sock")
        self.sock = os.path.join(self.sock_dir, "libvirt-sock")
        self.sock_ro = os.path.join(self.sock_dir, "libvirt-sock-ro")
        self.conf = os.path.join(self.dir, "ferryd.conf")
        self.log_path = os.path.join(self.dir, name + ".log")
        self.name = name
        self.listen = listen
        self.env = env or {}  # extra environment (e.g. SASL_CONF_PATH)
        with open(self.conf, "w") as f:
            f.write(
                f'listen_tcp = 1\nlisten_addr = "127.0.0.1"\ntcp_port = {self.port}\n'
                f'auth_tcp = "none"\nunix_sock_dir = "{self.sock_dir}"\n'
                f'domain_config_dir = "{self.dir}/config"\ndomain_run_dir = "{self.dir}/run"\n'
                f'log_level = 2\n' + extra_conf
            )
        self.proc = None

    @property
    def tcp_uri(self):
        return f"sim+tcp://127.0.0.1:{self.port}/system"

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
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferryd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) if self.listen else \
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


class DaemonTestCase(unittest.TestCase):
    """Starts daemons on demand and checks each for a clean, sanitizer-clean stop."""

    def setUp(self):
        self.daemons = []

    def start_daemon(self, **kw):
        d = Daemon(**kw)
        self.daemons.append(d)
        return d.start()

    def tearDown(self):
        failures = []
        for d in self.daemons:
            try:
                rc = d.stop()
                if rc not in (0, None) and d.proc.returncode != -signal.SIGKILL:
                    failures.append(f"{d.name} exited with {rc}:\n{d.log()[-4000:]}")
                report = d.sanitizer_report()
                if report:
                    failures.append(f"{d.name} sanitizer report:\n{report[-8000:]}")
            finally:
                d.cleanup()
        if failures:
            self.fail("\n".join(failures))
