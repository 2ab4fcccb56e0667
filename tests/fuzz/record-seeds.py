#!/usr/bin/env python3
"""Records the seed corpora of the fuzz harnesses (tests/fuzz/corpus/) from
real traffic: two ferryd, each behind a relay that saves every message of
every connection, driven by the stock virsh and python3-libvirt (domain
lifecycle, events, job queries, a tunnelled and a proxy-mode migration); and
two ferry-vmm, whose QMP conversation and VMM-to-VMM migration stream (through
a relay as well) are saved the same way.

    FERRY_BUILD_DIR=$PWD/build-asan tests/fuzz/record-seeds.py [OUTDIR]

Each seed is small: stream payloads are cut to 64 bytes and long runs of
stream packets to their first and last few, so the corpora stay in the repo.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
import ferrytest as ft  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
FERRY_PROGRAM = 0x66657279
PROC = {"DEFINE_XML": 11, "GET_XML_DESC": 14, "PREPARE3_PARAMS": 303,
        "PREPARE_TUNNEL3_PARAMS": 304, "FINISH3_PARAMS": 306}
PAYLOAD_CUT = 64
STREAM_KEEP = 6  # stream packets kept at each end of a run

# A domain with every element ferry models, metadata of several namespaces
# and elements it only keeps.
FULL_XML = """<domain type='kvm' xmlns:app='http://example.com/app'>
  <name>vm-full</name>
  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <title>web &amp; mail</title>
  <description>line one
line 'two' &lt;x&gt;</description>
  <metadata>
    <app:owner team="ops"><app:contact>a@b.c</app:contact></app:owner>
    <ferry:workload xmlns:ferry='http://ferry.dev/xmlns/domain/1' dirty-rate='200MiB' pattern='sequential' seed='42'/>
    <other xmlns='urn:other'><x a='1'/></other>
  </metadata>
  <memory unit='GiB'>2</memory>
  <currentMemory unit='MiB'>1024</currentMemory>
  <vcpu placement='static' current='2' cpuset='0-3'>4</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>coredump-restart</on_crash>
  <devices>
    <!-- the boot disk -->
    <disk type='file' device='disk'>
      <source file='/var/lib/ferry/vm1.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'><source network='default'/></interface>
  </devices>
  <seclabel type='none'/>
</domain>
"""


class Session:
    def __init__(self, name):
        self.name = name
        self.c2s = []  # messages, each with its length word
        self.s2c = []


class Relay:
    """Listens on a TCP or UNIX address; forwards each connection to the
    target and records the messages of both directions (RPC framing) or the
    raw bytes (raw=True)."""

    def __init__(self, connect, unix_path=None, raw=False):
        self.connect = connect
        self.raw = raw
        self.sessions = []
        self.label = "session"
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(unix_path)
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def uri(self):
        return f"sim+tcp://127.0.0.1:{self.port}/system"

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = Session(f"{self.label}-{len(self.sessions)}")
            self.sessions.append(s)
            u = self.connect()
            threading.Thread(target=self._pump, args=(c, u, s.c2s), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, s.s2c), daemon=True).start()

    def _pump(self, a, b, out):
        buf = b""
        while True:
            try:
                data = a.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                break
            if self.raw:
                out.append(data)
            else:
                buf += data
                while len(buf) >= 4:
                    (n,) = struct.unpack(">I", buf[:4])
                    if n < 4 or len(buf) < n:
                        break
                    out.append(buf[:n])
                    buf = buf[n:]
            try:
                b.sendall(data)
            except OSError:
                break
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def header(msg):
    return struct.unpack(">IIIiIII", msg[:28])  # len, prog, vers, proc, type, serial, status


def cut(msg, serial=None):
    """The message with its payload cut to PAYLOAD_CUT bytes (and serial replaced)."""
    n, prog, vers, proc, mtype, ser, status = header(msg)
    payload = msg[28:28 + PAYLOAD_CUT]
    if serial is not None:
        ser = serial
    return struct.pack(">IIIiIII", 28 + len(payload), prog, vers, proc, mtype, ser, status) + payload


def is_stream(msg):
    _, prog, _, _, mtype, _, _ = header(msg)
    return mtype == ft.STREAM or prog == FERRY_PROGRAM


def thin_streams(msgs):
    """Cuts stream packets and keeps the first and last few of each run."""
    out, run = [], []
    for m in msgs + [None]:
        if m is not None and is_stream(m):
            run.append(cut(m))
            continue
        out += run if len(run) <= 2 * STREAM_KEEP else run[:STREAM_KEEP] + run[-STREAM_KEEP:]
        run = []
        if m is not None:
            out.append(m)
    return out


def write(kind, name, data):
    d = os.path.join(OUT, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def xdr_string_at(buf, off=0):
    (n,) = struct.unpack(">I", buf[off:off + 4])
    return buf[off + 4:off + 4 + n]


def skip_typed_params(buf, off):
    """Offset after a remote_typed_param<> array starting at off."""
    (n,) = struct.unpack(">I", buf[off:off + 4])
    off += 4
    for _ in range(n):
        (ln,) = struct.unpack(">I", buf[off:off + 4])
        off += 4 + ln + (4 - ln % 4) % 4
        (t,) = struct.unpack(">i", buf[off:off + 4])
        off += 4
        if t in (1, 2, 6):  # int, uint, boolean
            off += 4
        elif t in (3, 4, 5):  # llong, ullong, double
            off += 8
        elif t == 7:  # string
            (ln,) = struct.unpack(">I", buf[off:off + 4])
            off += 4 + ln + (4 - ln % 4) % 4
    return off


def opaque_at(buf, off):
    (n,) = struct.unpack(">I", buf[off:off + 4])
    return buf[off + 4:off + 4 + n]


def save_cookies(s):
    """Cookies as each side received them: in PREPARE*/FINISH3 params calls
    (after the params), and first in their replies."""
    calls = {}
    for m in s.c2s:
        n, prog, vers, proc, mtype, serial, status = header(m)
        if prog == ft.REMOTE_PROGRAM and mtype == ft.CALL and proc in (
                PROC["PREPARE3_PARAMS"], PROC["PREPARE_TUNNEL3_PARAMS"], PROC["FINISH3_PARAMS"]):
            calls[serial] = proc
            cookie = opaque_at(m[28:], skip_typed_params(m[28:], 0))
            if cookie:
                write("migration-cookie", f"{s.name}-call-{proc}", cookie)
    for m in s.s2c:
        n, prog, vers, proc, mtype, serial, status = header(m)
        if prog == ft.REMOTE_PROGRAM and mtype == ft.REPLY and status == ft.OK and serial in calls \
                and proc != PROC["FINISH3_PARAMS"]:
            cookie = opaque_at(m[28:], 0)
            if cookie:
                write("migration-cookie", f"{s.name}-reply-{proc}", cookie)


def save_rpc_sessions(relay, readonly_names=()):
    for s in relay.sessions:
        if not s.c2s:
            continue
        msgs = thin_streams(s.c2s)
        stream = b"".join(msgs)
        write("rpc-framing", s.name, stream)
        sel = b"\x01" if s.name in readonly_names else b"\x00"
        write("remote-dispatch", s.name, sel + stream)
        calls = {}
        for m in s.c2s:
            n, prog, vers, proc, mtype, serial, status = header(m)
            if prog != ft.REMOTE_PROGRAM or mtype != ft.CALL:
                continue
            calls[serial] = proc
            if proc == PROC["DEFINE_XML"]:
                write("domain-xml", f"{s.name}-define-{serial}", xdr_string_at(m[28:]))
            if proc in (PROC["PREPARE3_PARAMS"], PROC["PREPARE_TUNNEL3_PARAMS"],
                        PROC["FINISH3_PARAMS"]):
                write("typed-params", f"{s.name}-{proc}-{serial}", m[28:])
        for m in s.s2c:
            n, prog, vers, proc, mtype, serial, status = header(m)
            if prog == ft.REMOTE_PROGRAM and mtype == ft.REPLY and status == ft.OK and \
                    proc == PROC["GET_XML_DESC"]:
                write("domain-xml", f"{s.name}-dumpxml-{serial}", xdr_string_at(m[28:]))
        save_tunnel(s)
        save_cookies(s)


def save_tunnel(s):
    """Stream and credit packets of a tunnelled migration, as each side's
    peer sent them, renumbered to the harness's stream serial (1)."""
    opening = [header(m)[5] for m in s.c2s
               if header(m)[1] == ft.REMOTE_PROGRAM and header(m)[3] == PROC["PREPARE_TUNNEL3_PARAMS"]
               and header(m)[4] == ft.CALL]
    if not opening:
        return
    serial = opening[0]
    credit = any(header(m)[1] == FERRY_PROGRAM for m in s.s2c + s.c2s)
    for direction, msgs, role in (("to-destination", s.c2s, 1), ("to-source", s.s2c, 0)):
        pk = [cut(m, serial=1) for m in msgs if is_stream(m) and header(m)[5] == serial]
        if len(pk) > 2 * STREAM_KEEP:
            pk = pk[:STREAM_KEEP] + pk[-STREAM_KEEP:]
        for vmm_bytes in (0, 2):
            for early in (0,):
                sel = role | (2 if credit else 0) | (vmm_bytes << 2) | (16 if early else 0)
                write("tunnel-stream", f"{s.name}-{direction}-{sel}", bytes([sel]) + b"".join(pk))


# fuzz-rpc-client (tests/fuzz/fuzz-rpc-client.c): the first byte picks which
# two procedures the client has pending as serials 0 and 1, the rest is what
# the server sends back.
CLIENT_SCENARIO = {(66, 1): 0, (59, 60): 1, (304, 306): 2, (303, 306): 3, (298, 1): 4}


def save_peer_replies(relay):
    """What a destination ferryd answered the source ferryd's own client during
    a migration, renumbered so that the prepare and finish replies answer the
    harness's pending serials 0 and 1 (other replies then answer no call)."""
    for s in relay.sessions:
        if not s.name.startswith("peer-"):
            continue
        calls = {}
        for m in s.c2s:
            n, prog, vers, proc, mtype, serial, status = header(m)
            if prog == ft.REMOTE_PROGRAM and mtype == ft.CALL:
                calls[serial] = proc
        prepare = 304 if 304 in calls.values() else 303
        renumber = {ser: (0 if proc == prepare else 1 if proc == 306 else 1000 + ser)
                    for ser, proc in calls.items()}
        out = []
        for m in thin_streams(s.s2c):
            n, prog, vers, proc, mtype, serial, status = header(m)
            out.append(m[:20] + struct.pack(">I", renumber.get(serial, serial)) + m[24:])
        write("rpc-client", s.name, bytes([CLIENT_SCENARIO[(prepare, 306)]]) + b"".join(out))


def record_client_replies(daemon):
    """A real ferryd's replies to the harness's pairs of calls (serials 0 and 1,
    on a connection opened first where the procedure needs it), followed by a
    keepalive PING the client must answer."""
    open_args = struct.pack(">I", 1) + ft.xdr_string("sim:///system") + struct.pack(">I", 0)
    args = {1: open_args, 60: struct.pack(">i", 7), 298: ft.xdr_string("vm1") + bytes(16)
            + struct.pack(">iI", -1, 0), 66: b"", 59: b""}

    def read_message(sock):
        head = b""
        while len(head) < 4:
            head += sock.recv(4 - len(head))
        (n,) = struct.unpack(">I", head)
        body = b""
        while len(body) < n - 4:
            body += sock.recv(n - 4 - len(body))
        return head + body

    ping = ft.message(ft.KEEPALIVE_PROGRAM, 1, ft.MESSAGE, 0)
    for (first, second), sel in CLIENT_SCENARIO.items():
        if first in (303, 304):
            continue  # recorded from the migrations (save_peer_replies)
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
            if first != 66:
                sock.sendall(ft.message(ft.REMOTE_PROGRAM, 1, ft.CALL, 100, ft.OK, open_args))
                read_message(sock)
            replies = []
            for serial, proc in enumerate((first, second)):
                sock.sendall(ft.message(ft.REMOTE_PROGRAM, proc, ft.CALL, serial, ft.OK, args[proc]))
                replies.append(read_message(sock))
        write("rpc-client", f"ferryd-replies-{first}-{second}", bytes([sel]) + b"".join(replies) + ping)


def record_daemons(tmp):
    a = ft.Daemon(name="seed-a").start()
    b = ft.Daemon(name="seed-b").start()
    try:
        ra = Relay(lambda: socket.create_connection(("127.0.0.1", a.port)))
        rb = Relay(lambda: socket.create_connection(("127.0.0.1", b.port)))
        xml = ft.write_file(tmp, "vm.xml", ft.domain_xml("vm1", memory_mib=8, dirty_rate="1MiB", seed=7))

        def v(relay, label, *args, ro=False):
            relay.label = label
            extra = ["-r"] if ro else []
            ft.virsh(relay.uri(), *extra, *args) if not ro else \
                subprocess.run(["virsh", "-r", "-c", relay.uri(), *args], capture_output=True, timeout=60)
            time.sleep(0.2)

        v(ra, "virsh-list", "list", "--all")
        v(ra, "virsh-ro-list", "list", "--all", ro=True)
        v(ra, "virsh-define", "define", xml)
        v(ra, "virsh-dominfo", "dominfo", "vm1")
        v(ra, "virsh-dumpxml", "dumpxml", "vm1")
        v(ra, "virsh-start", "start", "vm1")
        v(ra, "virsh-ro-dominfo", "dominfo", "vm1", ro=True)
        v(ra, "virsh-suspend", "suspend", "vm1")
        v(ra, "virsh-resume", "resume", "vm1")
        v(ra, "virsh-domjobinfo", "domjobinfo", "vm1")
        v(ra, "virsh-setspeed", "migrate-setspeed", "vm1", "200")

        ra.label = "python-libvirt"
        py = r"""
import sys, libvirt
libvirt.virEventRegisterDefaultImpl()
c = libvirt.open(sys.argv[1])
events = []
cb = c.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda *a: events.append(a), None)
for d in c.listAllDomains(0):
    d.info(); d.state(); d.isActive(); d.isPersistent(); d.autostart(); d.jobInfo(); d.jobStats(0)
    d.migrateGetMaxSpeed(); d.XMLDesc(0); d.OSType(); d.hasManagedSaveImage()
c.lookupByName("vm1").UUIDString()
c.getCapabilities(); c.getHostname(); c.getLibVersion(); c.getVersion(); c.getType(); c.getURI()
c.getInfo(); c.isSecure(); c.isAlive(); c.numOfDomains(); c.numOfDefinedDomains()
c.domainEventDeregisterAny(cb)
c.close()
"""
        subprocess.run(["/usr/bin/python3", "-c", py, ra.uri()], check=True, timeout=60)
        time.sleep(0.2)

        # A tunnelled migration A -> B, then back in proxy mode: the daemons'
        # own connection goes through the other relay.
        ra.label = "virsh-migrate-tunnelled"
        rb.label = "peer-tunnelled"
        p = subprocess.run(["virsh", "-c", ra.uri(), "migrate", "--live", "--p2p", "--tunnelled",
                            "vm1", rb.uri()], capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr
        time.sleep(0.5)
        rb.label = "virsh-migrate-proxy"
        ra.label = "peer-proxy"
        p = subprocess.run(["virsh", "-c", rb.uri(), "migrate", "--live", "--p2p", "vm1", ra.uri()],
                           capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr
        time.sleep(0.5)
        full = ft.write_file(tmp, "full.xml", FULL_XML)
        v(ra, "virsh-define-full", "define", full)
        v(ra, "virsh-dumpxml-full", "dumpxml", "vm-full")
        v(ra, "virsh-undefine-full", "undefine", "vm-full")
        v(ra, "virsh-destroy", "destroy", "vm1")
        v(ra, "virsh-undefine", "undefine", "vm1")
        v(ra, "virsh-bad-open", "-q", "uri")
        ro = [s.name for s in ra.sessions if s.name.startswith("virsh-ro-")]
        save_rpc_sessions(ra, ro)
        save_rpc_sessions(rb)
        save_peer_replies(ra)
        save_peer_replies(rb)
        record_client_replies(a)
    finally:
        for d in (a, b):
            d.stop()
            d.cleanup()


class QmpRecorder:
    """A QMP client that keeps every byte the VMM sent."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.raw = b""
        self.buf = b""
        self.next_id = 0
        self._read()

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.raw += chunk
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd, **args):
        self.next_id += 1
        msg = {"execute": cmd, "id": self.next_id}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if r.get("id") == self.next_id:
                return r


def start_vmm(tmp, name, *extra):
    qmp = os.path.join(tmp, name + ".qmp")
    p = subprocess.Popen([ft.FERRY_VMM, "--name", name, "--memory", "16K", "--qmp", qmp,
                          "--seed", "1", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ft.wait_for(lambda: os.path.exists(qmp), 10)
    return p, qmp


def record_vmm(tmp):
    """The harness runs query-status, migrate-set-parameters, migrate,
    query-migrate, stop, cont, query-migrate after capabilities: so does this."""
    dest_path = os.path.join(tmp, "incoming.sock")
    relay_path = os.path.join(tmp, "relay.sock")
    dst, dqmp = start_vmm(tmp, "dst", "--incoming", f"unix:{dest_path}")
    src, sqmp = start_vmm(tmp, "src")
    try:
        ft.wait_for(lambda: os.path.exists(dest_path), 10)
        relay = Relay(lambda: _unix(dest_path), unix_path=relay_path, raw=True)
        d = QmpRecorder(dqmp)
        s = QmpRecorder(sqmp)
        for q in (s, d):
            q.execute("qmp_capabilities")
        s.execute("query-status")
        s.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 30, "downtime-limit": 300})
        s.execute("migrate", uri=f"unix:{relay_path}")
        for _ in range(200):
            st = s.execute("query-migrate")["return"].get("status")
            if st in ("completed", "failed"):
                break
            s.next_id -= 1  # polls do not count: the harness queries once here
            time.sleep(0.05)
        s.next_id = 4
        s.execute("stop")
        s.execute("cont")
        s.execute("query-migrate")
        time.sleep(0.3)
        d.execute("query-status")
        time.sleep(0.2)
        write("qmp-client", "ferry-vmm-source", s.raw)
        write("qmp-client", "ferry-vmm-destination", d.raw)
        sess = relay.sessions[0]
        write("vmm-migration", "sender-stream", b"\x00" + b"".join(sess.c2s))
        write("vmm-migration", "receiver-replies", b"\x01" + b"".join(sess.s2c))
    finally:
        for p in (src, dst):
            p.kill()
            p.wait()


def record_admin(tmp):
    """virt-admin's side of every admin procedure ferryd answers (and some it
    refuses), through a relay on the daemon's libvirt-admin-sock."""
    d = ft.Daemon(name="seed-admin").start()
    try:
        relay_path = os.path.join(tmp, "admin-relay")
        relay = Relay(lambda: _unix(os.path.join(d.sock_dir, "libvirt-admin-sock")),
                      unix_path=relay_path)
        uri = f"libvirtd:///system?socket={relay_path}"
        env = dict(os.environ)
        env.pop("LIBVIRT_ADMIN_DEFAULT_URI", None)
        commands = [
            ("version", ["version"]),
            ("server-list", ["server-list"]),
            ("threadpool-info", ["server-threadpool-info", "libvirtd"]),
            ("threadpool-set", ["server-threadpool-set", "admin", "--max-workers", "6"]),
            ("threadpool-set-min", ["server-threadpool-set", "libvirtd", "--min-workers", "2"]),
            ("clients-info", ["server-clients-info", "admin"]),
            ("clients-set", ["server-clients-set", "libvirtd", "--max-clients", "40",
                             "--max-unauth-clients", "10"]),
            ("client-list", ["client-list", "admin"]),
            ("client-info", ["client-info", "admin", "1"]),
            ("client-disconnect", ["client-disconnect", "libvirtd", "12345"]),
            ("log-filters", ["daemon-log-filters"]),
            ("log-filters-set", ["daemon-log-filters", "1:rpc.server 4:*"]),
            ("log-outputs", ["daemon-log-outputs"]),
            ("log-outputs-set", ["daemon-log-outputs", "4:stderr"]),
            ("timeout", ["daemon-timeout", "--timeout", "0"]),
            ("update-tls", ["server-update-tls", "libvirtd"]),
            ("no-such-server", ["server-threadpool-info", "nope"]),
        ]
        for label, args in commands:
            relay.label = f"virt-admin-{label}"
            subprocess.run(["virt-admin", "-c", uri, *args], capture_output=True, timeout=60,
                           env=env)
            time.sleep(0.2)
        for s in relay.sessions:
            if s.c2s:
                write("admin-dispatch", s.name, b"".join(s.c2s))
    finally:
        d.stop()
        d.cleanup()


def _unix(path):
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    return c


def synthetic_dispatch_seeds():
    """One seed per procedure of remote_protocol.x that the recordings do not
    reach: open, define vm1, then the call with vm1 as its domain argument
    followed by zeros (flags), which every domain procedure's args start with."""
    import re
    x = open(os.path.join(os.path.dirname(__file__), "../../src/remote/remote_protocol.x")).read()
    procs = sorted({int(n) for n in re.findall(r"REMOTE_PROC_\w+ = (\d+)", x)})
    seen = set()
    for f in os.listdir(os.path.join(OUT, "remote-dispatch")):
        data = open(os.path.join(OUT, "remote-dispatch", f), "rb").read()[1:]
        while len(data) >= 28:
            n, prog, vers, proc, mtype, serial, status = header(data)
            seen.add(proc)
            data = data[max(n, 4):]
    uuid = bytes.fromhex("c7a5fdbdedaf9455926ad65c16db1809")
    dom = ft.xdr_string("vm1") + uuid + struct.pack(">i", -1)
    opening = ft.message(ft.REMOTE_PROGRAM, 1, ft.CALL, 1, ft.OK, struct.pack(">I", 1)
                         + ft.xdr_string("sim:///system") + struct.pack(">I", 0))
    define = ft.message(ft.REMOTE_PROGRAM, PROC["DEFINE_XML"], ft.CALL, 2, ft.OK, ft.xdr_string(
        ft.domain_xml("vm1", uuid="c7a5fdbd-edaf-9455-926a-d65c16db1809")))
    # The SASL socket (selector 2): the start of a DIGEST-MD5 and a SCRAM exchange.
    for mech in ("DIGEST-MD5", "SCRAM-SHA-256"):
        start = ft.xdr_string(mech) + struct.pack(">iI", 1, 0)
        msgs = [ft.message(ft.REMOTE_PROGRAM, 66, ft.CALL, 1), ft.message(ft.REMOTE_PROGRAM, 67, ft.CALL, 2),
                ft.message(ft.REMOTE_PROGRAM, 68, ft.CALL, 3, ft.OK, start),
                ft.message(ft.REMOTE_PROGRAM, 69, ft.CALL, 4, ft.OK, struct.pack(">iI", 0, 0))]
        write("remote-dispatch", f"synthetic-sasl-{mech.lower()}", b"\x02" + b"".join(msgs))
    for proc in procs:
        if proc in seen:
            continue
        call = ft.message(ft.REMOTE_PROGRAM, proc, ft.CALL, 3, ft.OK, dom + bytes(16))
        write("remote-dispatch", f"synthetic-proc-{proc}", b"\x00" + opening + define + call)


def main():
    with tempfile.TemporaryDirectory(prefix="ferry-seeds-") as tmp:
        record_vmm(tmp)
        record_daemons(tmp)
        record_admin(tmp)
    synthetic_dispatch_seeds()
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"seeds written to {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
