"""Hostile input from clients, peers and strangers (issue 10): each test
speaks the wire protocol with raw sockets, does what a well-behaved client
never does, and checks that ferryd refuses it with a clear error, stays up and
keeps serving others."""

import os
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

CONNECT_OPEN = 1
GET_HOSTNAME = 59
EVENT_CALLBACK_REGISTER_ANY = 316
EVENT_CALLBACK_DEREGISTER_ANY = 317
EVENT_CALLBACK_LIFECYCLE = 318
MAX_EVENT_CALLBACKS = 1024  # src/remote/remote-dispatch.c


class UnixRawClient(ft.RawClient):
    """RawClient over one of the daemon's UNIX sockets (rw or read-only)."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.serial = 0


def connect_open_args(name, flags=0):
    return struct.pack(">I", 1) + ft.xdr_string(name) + struct.pack(">I", flags)


def why(hdr, body):
    """The error of a reply, for assertion messages (None for a success)."""
    return ft.decode_error(body) if hdr[5] == ft.ERROR else None


def hostname_works(d):
    c = ft.RawClient(d, timeout=10)
    try:
        c.open()
        hdr, _ = c.call(GET_HOSTNAME)
        return hdr[5] == ft.OK
    finally:
        c.close()


class ConnectOpenNameTest(ft.DaemonTestCase):
    def test_names_without_a_colon_are_refused_on_the_read_only_socket(self):
        d = self.start_daemon()
        for name in ["sim", "SIM", "nothing", "/", "sim//system", "?", "#"]:
            c = UnixRawClient(d.sock_ro)
            try:
                hdr, body = c.call(CONNECT_OPEN, connect_open_args(name))
                self.assertEqual(hdr[5], ft.ERROR, name)
                code, origin, msg = ft.decode_error(body)
                self.assertEqual(code, 5, msg)  # VIR_ERR_NO_CONNECT
                self.assertEqual(origin, 0, msg)  # VIR_FROM_NONE, as libvirt's public API layer
                self.assertEqual(msg, f"no connection driver available for {name}")
            finally:
                c.close()
        self.assertTrue(hostname_works(d))

    def test_odd_names_with_a_colon_get_an_answer(self):
        d = self.start_daemon()
        cases = {"sim:": None, "sim:/system": None, "sim://": None, "sim://host": None,
                 ":": "no connection driver available for :",
                 "sim:x": "unexpected path 'x'", "sim:///other?x#y": "unexpected path '/other'"}
        for name, want in cases.items():
            c = UnixRawClient(d.sock_ro)
            try:
                hdr, body = c.call(CONNECT_OPEN, connect_open_args(name))
                if want is None:
                    self.assertEqual(hdr[5], ft.OK, (name, why(hdr, body)))
                else:
                    self.assertEqual(hdr[5], ft.ERROR, name)
                    self.assertIn(want, ft.decode_error(body)[2])
            finally:
                c.close()
        self.assertTrue(hostname_works(d))


def register_args(event_id=0):
    return struct.pack(">ii", event_id, 0)  # no domain filter


class EventCallbackTest(ft.DaemonTestCase):
    def test_callbacks_per_client_are_capped_and_freed_by_deregistering(self):
        d = self.start_daemon()
        c = UnixRawClient(d.sock_ro, timeout=30)
        self.addCleanup(c.close)
        c.open()
        ids = []
        for _ in range(MAX_EVENT_CALLBACKS):
            hdr, body = c.call(EVENT_CALLBACK_REGISTER_ANY, register_args())
            self.assertEqual(hdr[5], ft.OK, why(hdr, body))
            ids.append(struct.unpack(">i", body[:4])[0])
        hdr, body = c.call(EVENT_CALLBACK_REGISTER_ANY, register_args())
        self.assertEqual(hdr[5], ft.ERROR)
        code, _, msg = ft.decode_error(body)
        self.assertEqual(code, 9)  # VIR_ERR_OPERATION_FAILED
        self.assertEqual(msg, "operation failed: too many event callbacks on this connection: "
                              f"the limit is {MAX_EVENT_CALLBACKS}, deregister one first")
        hdr, _ = c.call(EVENT_CALLBACK_DEREGISTER_ANY, struct.pack(">i", ids[0]))
        self.assertEqual(hdr[5], ft.OK)
        hdr, body = c.call(EVENT_CALLBACK_REGISTER_ANY, register_args())
        self.assertEqual(hdr[5], ft.OK, why(hdr, body))

    def test_registration_queued_behind_a_busy_worker_after_the_client_left(self):
        """A CALLBACK_REGISTER_ANY that runs after its client's connection closed
        must not leave a listener pointing at the freed session (use-after-free
        on the next lifecycle event). One worker, held by a migration whose
        destination never answers, makes the order certain."""
        d = self.start_daemon(extra_conf="min_workers = 1\nmax_workers = 1\n")
        xml = ft.write_file(d.dir, "vm.xml", ft.domain_xml("vm1", memory_mib=16))
        ft.virsh(d.tcp_uri, "define", xml)
        ft.virsh(d.tcp_uri, "start", "vm1")

        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        silent.settimeout(60)
        ro = UnixRawClient(d.sock_ro)
        ro.open()
        env = dict(os.environ)
        env.pop("LIBVIRT_DEFAULT_URI", None)
        mig = subprocess.Popen(
            ["virsh", "-c", d.tcp_uri, "migrate", "--live", "--p2p", "vm1",
             f"sim+tcp://127.0.0.1:{silent.getsockname()[1]}/system"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            held, _ = silent.accept()  # the only worker now waits for our AUTH_LIST reply
            ro.sock.sendall(ft.message(ft.REMOTE_PROGRAM, EVENT_CALLBACK_REGISTER_ANY, ft.CALL,
                                       7, ft.OK, register_args()))
            ro.close()  # the call is queued; the connection closes before it runs
            time.sleep(1)
            held.close()  # frees the worker: the queued registration runs now
            _, err = mig.communicate(timeout=60)
            self.assertNotEqual(mig.returncode, 0)
        finally:
            if mig.poll() is None:
                mig.kill()
                mig.wait()
            silent.close()
        # A lifecycle event walks the listeners: a stale one would touch freed memory.
        ft.virsh(d.tcp_uri, "destroy", "vm1")
        ft.virsh(d.tcp_uri, "start", "vm1")
        self.assertTrue(hostname_works(d))
        self.assertIsNone(d.sanitizer_report())
        ft.virsh(d.tcp_uri, "destroy", "vm1")

    def test_concurrent_registrations_leave_one_listener(self):
        """Registrations racing on one client, then the client leaves: every
        listener they added must go with it (events afterwards touch nothing)."""
        d = self.start_daemon()
        xml = ft.write_file(d.dir, "vm.xml", ft.domain_xml("vm1", memory_mib=16))
        ft.virsh(d.tcp_uri, "define", xml)
        for round_ in range(20):
            c = UnixRawClient(d.sock_ro)
            self.addCleanup(c.close)
            c.open()
            c.sock.sendall(b"".join(
                ft.message(ft.REMOTE_PROGRAM, EVENT_CALLBACK_REGISTER_ANY, ft.CALL, 100 + i,
                           ft.OK, register_args()) for i in range(5)))
            for _ in range(5):
                hdr, body = ft.recv_message(c.sock)
                self.assertEqual(hdr[5], ft.OK, why(hdr, body))
            c.close()
        ft.virsh(d.tcp_uri, "start", "vm1")
        ft.virsh(d.tcp_uri, "destroy", "vm1")
        self.assertTrue(hostname_works(d))
        self.assertIsNone(d.sanitizer_report())


PREPARE_TUNNEL3_PARAMS = 304
MIG_LIVE, MIG_P2P, MIG_TUNNELLED = 1, 2, 4
TYPED_PARAM_STRING = 7


def typed_params(**strings):
    out = struct.pack(">I", len(strings))
    for name, value in strings.items():
        out += ft.xdr_string(name) + struct.pack(">i", TYPED_PARAM_STRING) + ft.xdr_string(value)
    return out


def prepare_tunnel3_args(xml):
    return (typed_params(destination_xml=xml) + struct.pack(">I", 0) +  # no cookie
            struct.pack(">I", MIG_LIVE | MIG_P2P | MIG_TUNNELLED))


class EarlyStreamPacketsTest(ft.DaemonTestCase):
    """STREAM packets with the serial of PREPARE_TUNNEL3_PARAMS sent before its
    reply (the protocol forbids it) once held the router's lock in the call's
    worker while waiting for a sink that only starts later: the call never
    answered, the connection never closed and SIGTERM hung."""

    def test_destination_answers_and_stops_despite_early_stream_packets(self):
        d = self.start_daemon()
        c = ft.RawClient(d, timeout=60)
        c.open()
        serial = 40
        packet = ft.message(ft.REMOTE_PROGRAM, PREPARE_TUNNEL3_PARAMS, ft.STREAM, serial,
                            ft.CONTINUE, b"\xa5" * 65536)
        call = ft.message(ft.REMOTE_PROGRAM, PREPARE_TUNNEL3_PARAMS, ft.CALL, serial, ft.OK,
                          prepare_tunnel3_args(ft.domain_xml("early", memory_mib=16)))
        stop = threading.Event()

        def flood():
            # Far more than the plain window (256 KiB), all the time the
            # destination prepares, before and after its slot exists.
            try:
                c.sock.sendall(call)
                for _ in range(400):
                    if stop.is_set():
                        break
                    c.sock.sendall(packet)
                    time.sleep(0.005)
            except OSError:
                pass

        sender = threading.Thread(target=flood)
        sender.start()
        try:
            while True:  # the reply, among whatever the destination streams back
                hdr, body = ft.recv_message(c.sock)
                if hdr[3] == ft.REPLY and hdr[4] == serial:
                    break
        finally:
            stop.set()
            sender.join(30)
        # Whatever it answered, the daemon is not wedged: others are served,
        # the incoming domain's lock is free, and (in tearDown) SIGTERM stops it.
        c.close()
        self.assertTrue(hostname_works(d))
        ft.virsh(d.tcp_uri, "list", "--all", timeout=30)


def remote_error(message, code=1):
    """A remote_error payload: code, domain, message, level, and the rest NULL/0."""
    return (struct.pack(">iiI", code, 0, 1) + ft.xdr_string(message) +
            struct.pack(">iIIIIiiI", 2, 0, 0, 0, 0, 0, 0, 0))


class HostileDestination:
    """Enough of a destination ferryd for a source's p2p tunnelled migration,
    that streams data with the serial of PREPARE_TUNNEL3_PARAMS before
    answering it. Serves one connection in a thread."""

    FEATURES_SUPPORTED = {4, 6, 13}  # P2P, V3, PARAMS; no keepalive (10)

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.settimeout(60)
        self.port = self.listener.getsockname()[1]
        self.prepared = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.settimeout(60)
        try:
            while True:
                hdr, body = ft.recv_message(conn)
                prog, vers, proc, mtype, serial, status = hdr
                if mtype != ft.CALL:
                    continue  # the source's stream packets, if any
                ok = lambda payload=b"": conn.sendall(  # noqa: E731
                    ft.message(prog, proc, ft.REPLY, serial, ft.OK, payload))
                if proc == 66:  # AUTH_LIST: none
                    ok(struct.pack(">Ii", 1, 0))
                elif proc == 60:  # SUPPORTS_FEATURE
                    (feature,) = struct.unpack(">i", body[:4])
                    ok(struct.pack(">i", 1 if feature in self.FEATURES_SUPPORTED else 0))
                elif proc in (1, 2):  # CONNECT_OPEN, CONNECT_CLOSE
                    ok()
                elif proc == PREPARE_TUNNEL3_PARAMS:
                    data = ft.message(prog, proc, ft.STREAM, serial, ft.CONTINUE, b"\x5a" * 65536)
                    conn.sendall(data * 64)  # 4 MiB before the reply
                    ok(struct.pack(">I", 0))  # an empty cookie: a plain libvirt peer
                    self.prepared.set()
                else:
                    conn.sendall(ft.message(prog, proc, ft.REPLY, serial, ft.ERROR,
                                            remote_error(f"procedure {proc} refused")))
        except (OSError, EOFError, struct.error):
            pass
        finally:
            conn.close()

    def close(self):
        self.listener.close()


class HostileDestinationTest(ft.DaemonTestCase):
    def test_source_survives_stream_packets_before_the_prepare_reply(self):
        src = self.start_daemon()
        xml = ft.write_file(src.dir, "vm.xml", ft.domain_xml("vm1", memory_mib=16))
        ft.virsh(src.tcp_uri, "define", xml)
        ft.virsh(src.tcp_uri, "start", "vm1")
        dest = HostileDestination()
        try:
            rc, _, err = ft.virsh(src.tcp_uri, "migrate", "--live", "--p2p", "--tunnelled",
                                  "vm1", f"sim+tcp://127.0.0.1:{dest.port}/system",
                                  check=False, timeout=120)
        finally:
            dest.close()
        self.assertTrue(dest.prepared.is_set())
        self.assertNotEqual(rc, 0)
        # The source's worker came back: it answers, and the VM is still its own.
        self.assertTrue(ft.wait_for(lambda: ft.domstate(src, "vm1").startswith("running"), 30),
                        ft.domstate(src, "vm1"))
        ft.virsh(src.tcp_uri, "destroy", "vm1")


if __name__ == "__main__":
    unittest.main()
