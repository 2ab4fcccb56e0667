"""Network-level abuse of one ferryd on every socket it has (UNIX read-write
and read-only, TCP with SASL, TLS), all at once: bursts of connections
sending garbage, malformed headers, truncated messages, undecodable
arguments and 32 MiB length words, slow writers, clients that never read
their replies or the PONGs of their PING floods,
unauthenticated floods of AUTH_* calls and stalled TLS handshakes. Meanwhile
a normal client's virsh calls and a tunnelled migration to a second ferryd
must succeed, and the abused daemon's RSS must stay within a bound. Every
abuser runs a bounded loop and stops by itself; the whole test takes about
half a minute."""

import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import shutil
from contextlib import closing

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
from test_tls_sasl import Pki  # noqa: E402

AUTH_LIST, AUTH_SASL_INIT, AUTH_SASL_START, AUTH_SASL_STEP = 66, 67, 68, 69
CONNECT_OPEN, GET_HOSTNAME, GET_CAPABILITIES, LIST_ALL_DOMAINS = 1, 59, 7, 273
PROCS = [1, 2, 7, 11, 14, 23, 59, 66, 67, 68, 69, 163, 273, 302, 303, 304, 305, 306, 307, 999]

# The abused daemon's RSS may grow by at most this much over its idle value.
# The abuse has a fixed concurrency (about 230 connections at the peak, each
# with its threads), ASan's quarantine is capped at 32 MiB and unrequested
# messages at 1 MiB per client; measured growth is 140-165 MiB. Unbounded
# queues fail it by far: four PING floods of 16 MiB each queued their PONGs
# (over 700 MiB), four 32 MiB length words allocated 128 MiB up front.
RSS_GROWTH_LIMIT_KIB = 256 * 1024
ABUSE_SECONDS_MAX = 60


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Target:
    """Where the abusers connect: each kind opens a fresh connection."""

    def __init__(self, daemon, pki):
        self.d = daemon
        self.ctx = ssl.create_default_context(cafile=pki.path("cacert.pem"))
        self.ctx.load_cert_chain(pki.path("client.pem"), pki.path("clientkey.pem"))

    def connect(self, kind, timeout=5):
        if kind in ("unix", "ro"):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(timeout)
            s.connect(self.d.sock if kind == "unix" else self.d.sock_ro)
            return s
        if kind == "tcp":
            return socket.create_connection(("127.0.0.1", self.d.port), timeout=timeout)
        raw = socket.create_connection(("127.0.0.1", self.d.tls_port), timeout=timeout)
        try:
            s = self.ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        except (OSError, ssl.SSLError):
            raw.close()
            raise
        try:
            if s.recv(1) != b"\x01":  # the server's confirmation inside TLS
                raise ConnectionError("no TLS confirmation byte")
        except (OSError, ssl.SSLError):
            s.close()
            raise
        return s


KINDS = ("unix", "ro", "tcp", "tls")


def call(proc, serial, payload=b"", prog=ft.REMOTE_PROGRAM):
    return ft.message(prog, proc, ft.CALL, serial, ft.OK, payload)


def drain(s, seconds):
    """Reads whatever comes for a while (replies, or the close)."""
    deadline = time.monotonic() + seconds
    try:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                if not s.recv(65536):
                    return
            except socket.timeout:
                continue
    except OSError:
        return


def quiet(fn):
    """An abuser's step: the daemon closing on it, refusing it or resetting it
    is the expected outcome, not a failure of the test."""
    def wrapped(*a):
        try:
            fn(*a)
        except (OSError, ssl.SSLError, ValueError):
            pass
    return wrapped


# ---- the abusers: each makes one connection misbehave in one way ----

@quiet
def garbage(t, kind, rng):
    with closing(t.connect(kind)) as s:
        s.sendall(rng.randbytes(rng.randint(1, 4096)))
        drain(s, 0.5)


@quiet
def malformed_headers(t, kind, rng):
    with closing(t.connect(kind)) as s:
        for i in range(20):
            body = struct.pack(">IIiIII", rng.choice([ft.REMOTE_PROGRAM, ft.KEEPALIVE_PROGRAM,
                                                       rng.getrandbits(32)]),
                               rng.choice([1, rng.getrandbits(32)]), rng.choice(PROCS + [-1]),
                               rng.randint(0, 7), i, rng.randint(0, 3)) + rng.randbytes(rng.randint(0, 64))
            s.sendall(struct.pack(">I", 4 + len(body)) + body)
        drain(s, 0.5)


@quiet
def truncated(t, kind, rng):
    with closing(t.connect(kind)) as s:
        msg = call(rng.choice(PROCS), 1, rng.randbytes(rng.randint(0, 200)))
        cut = rng.randint(1, len(msg) - 1)
        if rng.random() < 0.5:
            # The length word promises more than ever comes (at most 1 MiB).
            msg = struct.pack(">I", rng.randint(len(msg) + 1, 1 << 20)) + msg[4:]
            cut = len(msg)
        s.sendall(msg[:cut])
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, 1))


@quiet
def undecodable_args(t, kind, rng):
    with closing(t.connect(kind)) as s:
        if kind in ("unix", "ro", "tls"):
            s.sendall(call(CONNECT_OPEN, 0, struct.pack(">I", 1) + ft.xdr_string("sim:///system")
                           + struct.pack(">I", 0)))
        for i in range(1, 30):
            s.sendall(call(rng.choice(PROCS), i, rng.randbytes(rng.randint(0, 300))))
        drain(s, 1)


@quiet
def odd_open_names(t, kind, rng):
    """CONNECT_OPEN with names a driver registry must refuse, not crash on
    (a name without ':' killed ferryd from the read-only socket)."""
    with closing(t.connect(kind)) as s:
        names = ["sim", "", ":", "x:", "sim:", "sim://", "::::", "\u00e9t\u00e9", "a" * 4000,
                 rng.randbytes(rng.randint(0, 40)).decode("latin-1")]
        for i, name in enumerate(names):
            s.sendall(call(CONNECT_OPEN, i, struct.pack(">I", 1) + ft.xdr_string(name)
                           + struct.pack(">I", rng.choice([0, 1]))))
        drain(s, 0.5)


@quiet
def slow_writer(t, kind, rng):
    with closing(t.connect(kind, timeout=10)) as s:
        msg = call(AUTH_LIST, 7)
        for i in range(len(msg)):
            s.sendall(msg[i:i + 1])
            time.sleep(0.1)
        ft.recv_message(s)


@quiet
def non_reader(t, kind, rng):
    """Pipelines calls whose replies it never reads, then hangs on a while."""
    with closing(t.connect(kind)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        proc = AUTH_LIST if kind == "tcp" else GET_CAPABILITIES
        if kind != "tcp":
            s.sendall(call(CONNECT_OPEN, 0, struct.pack(">I", 1) + ft.xdr_string("sim:///system")
                           + struct.pack(">I", 0)))
        s.settimeout(2)
        try:
            for i in range(1, 2000):
                s.sendall(call(proc, i))
        except socket.timeout:
            pass  # the daemon stopped reading us: what max_client_requests promises
        time.sleep(rng.uniform(1, 3))


@quiet
def ping_flood(t, kind, rng):
    """Keepalive PINGs, up to 16 MiB of them, from a client that never reads
    the PONGs (before authentication on the SASL socket)."""
    with closing(t.connect(kind)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(2)
        chunk = ft.message(ft.KEEPALIVE_PROGRAM, 1, ft.MESSAGE, 0) * 10000
        try:
            for _ in range(60):
                s.sendall(chunk)
        except socket.timeout:
            pass  # the daemon stopped reading us
        time.sleep(rng.uniform(0.5, 2))


@quiet
def huge_length(t, kind, rng):
    """A length word announcing the largest message allowed (32 MiB), a header,
    then nothing more for a while."""
    with closing(t.connect(kind)) as s:
        s.sendall(struct.pack(">I", 32 << 20) + call(GET_HOSTNAME, 1)[4:])
        drain(s, rng.uniform(1, 3))


@quiet
def sasl_flood(t, kind, rng):
    """Unauthenticated: the SASL steps with nonsense, and calls that need auth."""
    with closing(t.connect("tcp")) as s:
        s.sendall(call(AUTH_LIST, 1) + call(AUTH_SASL_INIT, 2))
        mech = rng.choice([b"DIGEST-MD5", b"SCRAM-SHA-256", b"NOPE", rng.randbytes(40)])
        start = struct.pack(">I", len(mech)) + mech + b"\0" * ((4 - len(mech) % 4) % 4)
        data = rng.randbytes(rng.randint(0, 64))
        start += struct.pack(">iI", 1, len(data)) + b"".join(struct.pack(">i", b) for b in data)
        s.sendall(call(AUTH_SASL_START, 3, start) + call(GET_HOSTNAME, 4) + call(CONNECT_OPEN, 5))
        drain(s, 0.3)


@quiet
def tls_stall(t, kind, rng):
    """TLS port: plain RPC instead of a handshake, or a handshake never finished."""
    with closing(socket.create_connection(("127.0.0.1", t.d.tls_port), timeout=5)) as s:
        if rng.random() < 0.5:
            s.sendall(call(AUTH_LIST, 0))
        else:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(20))
        drain(s, rng.uniform(0.5, 3))


ABUSERS = [garbage, malformed_headers, truncated, undecodable_args, odd_open_names, slow_writer,
           non_reader, ping_flood, huge_length]


class AbuseTest(ft.DaemonTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = Pki()
        cls.sasl_dir = tempfile.mkdtemp(prefix="ferry-abuse-sasl-")
        db = os.path.join(cls.sasl_dir, "sasldb")
        p = subprocess.run(["saslpasswd2", "-f", db, "-a", "libvirt", "-p", "alice"],
                           input="secret1", text=True, capture_output=True, timeout=30)
        assert p.returncode == 0, p.stderr
        with open(os.path.join(cls.sasl_dir, "libvirt.conf"), "w") as f:
            f.write(f"mech_list: digest-md5 scram-sha-256\nsasldb_path: {db}\n")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.sasl_dir, ignore_errors=True)
        cls.pki.cleanup()

    def start_abused(self):
        tls_port = ft.free_port()
        asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1") + ":quarantine_size_mb=32"
        conf = self.pki.server_conf("server", tls_port,
                                    'auth_tcp = "sasl"\ntls_handshake_timeout = 2\n'
                                    "keepalive_interval = 2\nkeepalive_count = 3\n"
                                    "max_client_send_queue = 1048576\n")
        d = self.start_daemon(name="abused", extra_conf=conf,
                              env={"SASL_CONF_PATH": self.sasl_dir, "ASAN_OPTIONS": asan})
        d.tls_port = tls_port
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        return d

    def test_abuse_on_every_socket_while_a_client_and_a_migration_carry_on(self):
        a = self.start_abused()
        b = self.start_daemon(name="destination")
        tmp = tempfile.mkdtemp(prefix="ferry-abuse-")
        self.addCleanup(shutil.rmtree, tmp, True)
        xml = ft.write_file(tmp, "vm1.xml", ft.domain_xml("vm1", memory_mib=64, dirty_rate="2MiB"))
        ft.virsh(a.unix_uri, "define", xml)
        ft.virsh(a.unix_uri, "start", "vm1")
        for _ in range(3):
            ft.virsh(a.unix_uri, "list", "--all")
        idle_rss = rss_kib(a.proc.pid)
        idle_fds = ft.fd_count(a.proc.pid)

        t = Target(a, self.pki)
        stop = threading.Event()
        peak = [idle_rss]
        rounds = {"n": 0}

        def monitor():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(a.proc.pid))
                time.sleep(0.1)

        def abuser(fn, kind, seed):
            rng = random.Random(seed)
            deadline = time.monotonic() + ABUSE_SECONDS_MAX
            while not stop.is_set() and time.monotonic() < deadline:
                fn(t, kind, rng)
                rounds["n"] += 1

        def burst(kind, seed):
            """50 connections at once, each sending half a message, held open."""
            rng = random.Random(seed)
            socks = []
            for _ in range(50):
                try:
                    s = t.connect(kind)
                    s.sendall(call(GET_HOSTNAME, 1)[:rng.randint(1, 27)])
                    socks.append(s)
                except (OSError, ssl.SSLError):
                    pass
            stop.wait(rng.uniform(2, 5))
            for s in socks:
                s.close()

        threads = [threading.Thread(target=monitor)]
        seed = 1
        for kind in KINDS:
            threads.append(threading.Thread(target=burst, args=(kind, seed)))
            seed += 1
            for fn in ABUSERS:
                threads.append(threading.Thread(target=abuser, args=(fn, kind, seed)))
                seed += 1
        for i in range(4):
            threads.append(threading.Thread(target=abuser, args=(sasl_flood, "tcp", 100 + i)))
        for i in range(2):
            threads.append(threading.Thread(target=abuser, args=(tls_stall, "tls", 200 + i)))
        for th in threads:
            th.start()

        failures = []
        try:
            time.sleep(2)  # abuse under way
            # virsh on the read-write UNIX socket (TCP asks for SASL here).
            env = dict(os.environ)
            env.pop("LIBVIRT_DEFAULT_URI", None)
            mig = subprocess.Popen(["virsh", "-c", a.unix_uri, "migrate", "--live", "--p2p",
                                    "--tunnelled", "vm1", b.tcp_uri],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            calls = 0
            # The normal client: virsh on the read-write socket, until the
            # migration is over (and at least 10 calls).
            while mig.poll() is None or calls < 10:
                for args in (("list", "--all"), ("hostname",), ("domjobinfo", "vm1")):
                    rc, out, err = ft.virsh(a.unix_uri, *args, timeout=90, check=False)
                    calls += 1
                    # vm1 leaves A at the end of the migration.
                    if rc != 0 and not (args[0] == "domjobinfo" and "not found" in err.lower()):
                        failures.append(f"virsh {' '.join(args)}: {err.strip()}")
            out, err = mig.communicate(timeout=120)
            if mig.returncode != 0:
                failures.append(f"migration failed: {err.strip()}")
        finally:
            stop.set()
            for th in threads:
                th.join(30)
        self.assertEqual(failures, [])
        self.assertIsNone(a.proc.poll(), "the abused ferryd died:\n" + a.log()[-4000:])
        self.assertTrue(ft.domstate(b, "vm1").startswith("running"), ft.domstate(b, "vm1"))
        self.assertNotIn("vm1", ft.virsh(a.unix_uri, "list", "--name")[1].split())
        self.assertGreater(rounds["n"], 200)
        growth = peak[0] - idle_rss
        self.assertLess(growth, RSS_GROWTH_LIMIT_KIB,
                        f"RSS grew from {idle_rss} KiB to {peak[0]} KiB under abuse")
        # Every abusive connection is gone again: no descriptor stays behind.
        self.assertTrue(ft.wait_for(lambda: ft.fd_count(a.proc.pid) <= idle_fds + 2, 15),
                        f"{ft.fd_count(a.proc.pid)} fds open, {idle_fds} before the abuse")
        print(f"abuse: {rounds['n']} abusive connections, RSS {idle_rss} -> peak {peak[0]} KiB",
              file=sys.stderr)


class KeepaliveProgramTest(ft.DaemonTestCase):
    """Found by fuzz-remote-dispatch: a CALL naming the keepalive program was
    swallowed by the keepalive handler, and its caller waited forever.
    libvirt takes only MESSAGEs of keepalive version 1 for keepalive."""

    def test_a_call_to_the_keepalive_program_is_answered_unknown_program(self):
        d = self.start_daemon()
        c = ft.RawClient(d, timeout=10)
        try:
            c.sock.sendall(ft.message(ft.KEEPALIVE_PROGRAM, 1, ft.CALL, 5))
            hdr, body = ft.recv_message(c.sock)
            self.assertEqual((hdr[0], hdr[3], hdr[4], hdr[5]),
                             (ft.KEEPALIVE_PROGRAM, ft.REPLY, 5, ft.ERROR))
            self.assertIn("Cannot find program", ft.decode_error(body)[2])
            # A PING of another version is not keepalive: no PONG, and the
            # next call's reply is the next message.
            c.sock.sendall(ft.message(ft.KEEPALIVE_PROGRAM, 1, ft.MESSAGE, 0, vers=2)
                           + call(AUTH_LIST, 6))
            hdr, body = ft.recv_message(c.sock)
            self.assertEqual((hdr[0], hdr[2], hdr[4], hdr[5]), (ft.REMOTE_PROGRAM, AUTH_LIST, 6, ft.OK))
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
