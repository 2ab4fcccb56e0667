"""libvirt's connection limits, enforced on a real ferryd over raw sockets:
a client that floods keepalive PINGs and never reads is dropped while the
daemon's memory stays bounded; before authentication a message may be small,
a client has a deadline, and at most max_anonymous_clients wait at once;
max_queued_clients is the listen backlog; a connection the system cannot give
threads to is refused, not an abort; client text in the log is escaped; and
libvirtd.conf's own value forms (tcp_port = "16509") load."""

import errno
import os
import re
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

GET_HOSTNAME = 59
AUTH_LIST, AUTH_SASL_INIT, AUTH_SASL_START = 66, 67, 68
SASL_TCP = 'auth_tcp = "sasl"\n'


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def threads_of(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def tcp(d):
    return socket.create_connection(("127.0.0.1", d.port), timeout=10)


class SendQueueTest(ft.DaemonTestCase):
    def test_ping_flood_from_a_client_that_never_reads_is_dropped_with_bounded_memory(self):
        # ASan keeps freed memory in a quarantine (256 MiB by default); a small
        # one keeps what is measured ferryd's own memory.
        d = self.start_daemon(env={"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=16"})
        self.assertTrue(ft.hostname_works(d))
        before = rss_kib(d.proc.pid)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        s.settimeout(60)
        s.connect(("127.0.0.1", d.port))
        chunk = ft.message(ft.KEEPALIVE_PROGRAM, 1, ft.MESSAGE, 0) * 20000  # 560 KB of PINGs
        sent, peak, dropped = 0, before, False
        while sent < 64 * 1024 * 1024:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            sent += len(chunk)
            peak = max(peak, rss_kib(d.proc.pid))
        s.close()
        peak = max(peak, rss_kib(d.proc.pid))
        print(f"ping flood: {sent} bytes sent, RSS {before} -> {peak} KiB", file=sys.stderr)
        self.assertTrue(dropped, f"{sent} bytes of PINGs sent and the client is still connected")
        # 8 MiB of queued PONGs (max_client_send_queue), counted as the memory
        # they hold, plus the sanitizer's overhead; without the bound, several
        # hundred MiB.
        self.assertLess(peak - before, 64 * 1024, f"RSS grew from {before} to {peak} KiB")
        self.assertRegex(d.log(), r"closing connection: 127\.0\.0\.1:\d+ does not read what it "
                                  r"is sent: \d+ bytes of messages it did not ask for are queued "
                                  r"\(limit 8388608\)")
        self.assertTrue(ft.hostname_works(d))


class BeforeAuthenticationTest(ft.DaemonTestCase):
    def test_a_large_message_before_authentication_is_refused_at_its_length_word(self):
        d = self.start_daemon(extra_conf=SASL_TCP)
        s = tcp(d)
        s.sendall(struct.pack(">I", 1024 * 1024) + b"\0" * 24)
        self.assertTrue(ft.wait_closed(s, 5))
        s.close()
        self.assertRegex(d.log(), r"message length 1048576 exceeds the \d+ byte limit before "
                                  r"authentication")
        # The largest SASL step still fits: AUTH_LIST padded to 200 KiB is read and answered.
        c = ft.RawClient(d)
        hdr, _ = c.call(AUTH_LIST, b"\0" * (200 * 1024))
        self.assertEqual(hdr[4], 0)  # answered (the padding makes it an error)
        c.close()

    def test_the_same_message_is_read_once_authenticated(self):
        d = self.start_daemon()  # auth_tcp = "none": authenticated from the start
        c = ft.RawClient(d)
        hdr, _ = c.call(AUTH_LIST, b"\0" * (1024 * 1024))
        self.assertEqual(hdr[4], 0)
        c.close()

    def test_a_client_that_does_not_authenticate_in_time_is_dropped(self):
        d = self.start_daemon(extra_conf=SASL_TCP + "auth_timeout = 1\n")
        s = tcp(d)
        t0 = time.monotonic()
        self.assertTrue(ft.wait_closed(s, 6))
        self.assertGreater(time.monotonic() - t0, 0.8)
        s.close()
        self.assertRegex(d.log(), r"closing connection: 127\.0\.0\.1:\d+ did not authenticate "
                                  r"within 1 seconds \(auth_timeout\)")
        # Clients of a socket without authentication have no deadline.
        u = socket.socket(socket.AF_UNIX)
        u.connect(d.sock)
        self.assertFalse(ft.wait_closed(u, 2.5))
        u.close()

    def test_max_anonymous_clients_stops_accepting_until_one_leaves(self):
        d = self.start_daemon(extra_conf=SASL_TCP + "max_anonymous_clients = 2\n")
        time.sleep(0.5)  # the harness's readiness probe must be gone first
        first = [tcp(d) for _ in range(2)]
        for s in first:  # both accepted and served
            s.sendall(ft.message(ft.REMOTE_PROGRAM, AUTH_LIST, ft.CALL, 1))
            self.assertEqual(ft.recv_message(s)[0][4], 1)
        third = tcp(d)  # the kernel completes it: it waits in the backlog
        third.sendall(ft.message(ft.REMOTE_PROGRAM, AUTH_LIST, ft.CALL, 3))
        third.settimeout(1.5)
        with self.assertRaises(socket.timeout):
            third.recv(1)
        self.assertIn("2 not authenticated (max_anonymous_clients 2)", d.log())
        first.pop().close()
        third.settimeout(10)
        hdr, body = ft.recv_message(third)
        self.assertEqual((hdr[4], hdr[5]), (3, ft.OK))
        self.assertEqual(body, struct.pack(">II", 1, 1))  # [SASL]
        third.close()
        first[0].close()

    def test_max_queued_clients_is_the_listen_backlog(self):
        d = self.start_daemon(extra_conf="max_clients = 1\nmax_queued_clients = 3\n")
        time.sleep(0.5)
        held = ft.RawClient(d)
        held.open()  # the one client: ferryd stops accepting
        waiting = []
        refused = None
        for _ in range(20):
            u = socket.socket(socket.AF_UNIX)
            u.setblocking(False)
            try:
                u.connect(d.sock)
            except OSError as e:
                refused = e.errno
                u.close()
                break
            waiting.append(u)
        # Linux queues backlog + 1 connections on a UNIX socket, then refuses.
        self.assertEqual(refused, errno.EAGAIN)
        self.assertIn(len(waiting), (3, 4))
        held.close()
        for u in waiting:
            u.close()
        time.sleep(0.5)
        self.assertTrue(ft.hostname_works(d))


# A uid of this test's own, which no account and no other test uses: RLIMIT_NPROC
# counts every thread of the user, so a libvirtd another test runs as nobody
# (test_probe) starting meanwhile took the threads the limit left ferryd.
STRANGER_UID = 48126
AS_STRANGER = ["setpriv", f"--reuid={STRANGER_UID}", f"--regid={STRANGER_UID}", "--clear-groups"]


def stranger_tasks():
    """Threads of every process of STRANGER_UID (what RLIMIT_NPROC counts)."""
    out = subprocess.run(["ps", "-L", "-u", str(STRANGER_UID), "--no-headers"], capture_output=True,
                         text=True).stdout
    return len(out.splitlines())


class ThreadRefusalTest(ft.DaemonTestCase):
    def stranger_daemon(self, prefix):
        d = ft.Daemon(extra_conf="max_workers = 1\n", prefix=prefix + AS_STRANGER)
        self.daemons.append(d)
        os.chmod(d.dir, 0o777)
        d.start()
        self.assertTrue(ft.hostname_works(d))
        return d

    def test_a_connection_without_threads_is_refused_and_the_daemon_lives_on(self):
        # ferryd runs as STRANGER_UID with RLIMIT_NPROC (which counts the user's
        # threads) a few threads above what it uses when idle: first measured.
        d = self.stranger_daemon([])
        time.sleep(0.5)
        idle = threads_of(d.proc.pid)
        self.assertEqual(d.stop(), 0)
        limit = stranger_tasks() + idle + 5
        d = self.stranger_daemon(["prlimit", f"--nproc={limit}:{limit}"])
        held = []
        refused = 0
        for _ in range(8):
            s = tcp(d)
            if ft.wait_closed(s, 1):
                refused += 1
                s.close()
            else:
                held.append(s)
        self.assertGreater(refused, 0)
        self.assertGreater(len(held), 0)
        self.assertIsNone(d.proc.poll(), "ferryd died")
        self.assertRegex(d.log(), r"refusing connection on tcp 127\.0\.0\.1:\d+: cannot start a "
                                  r"thread for the connection of 127\.0\.0\.1:\d+")
        for s in held:
            s.close()
        time.sleep(1)
        self.assertTrue(ft.hostname_works(d))


class DaemonThreadRefusalTest(ft.DaemonTestCase):
    """The daemon's own threads (a migration's setup, watchdog and data pumps): when the system refuses one, the domain start or
    the migration fails naming it, ferryd serves the next call, and the VM stays
    where it was. FERRY_TEST_FAIL_THREADS makes ferryd's thread creation fail
    for the named threads exactly as when the system refuses (EAGAIN)."""

    def daemon(self, name, fail=None):
        env = {"FERRY_TEST_FAIL_THREADS": fail} if fail else {}
        return self.start_daemon(name=name, env=env)

    def start_vm(self, d, name="vm1"):
        xml = ft.write_file(d.dir, name + ".xml", ft.domain_xml(name, memory_mib=64))
        ft.virsh(d.tcp_uri, "define", xml)
        return ft.virsh(d.tcp_uri, "start", name, check=False)

    def migration_fails(self, side, thread, tunnelled):
        a = self.daemon("source", fail=thread if side == "source" else None)
        b = self.daemon("destination", fail=thread if side == "destination" else None)
        rc, _, err = self.start_vm(a)
        self.assertEqual(rc, 0, err)
        rc, _, err = ft.migrate(a, b, "vm1", "--live", tunnelled=tunnelled, timeout=120)
        self.assertNotEqual(rc, 0)
        failing = a if side == "source" else b
        self.assertIn(f"cannot create a thread for {thread}: ", err + failing.log())
        for d in (a, b):
            self.assertIsNone(d.proc.poll(), f"{d.name} died")
            self.assertTrue(ft.hostname_works(d))
        self.assertTrue(ft.wait_for(lambda: ft.domstate(a, "vm1").startswith("running"), 10),
                        ft.domstate(a, "vm1"))
        self.assertTrue(ft.wait_for(lambda: "vm1" not in ft.domain_names(b, "--all"), 30))
        return err

    def test_domain_start_qmp_reader(self):
        """The monitor's reader thread refused: the start fails naming it (not
        the VMM's last log line after the 20 s start timeout) and no VMM is
        left running."""
        d = self.daemon("host", fail="qmp-reader")
        rc, _, err = self.start_vm(d)
        self.assertNotEqual(rc, 0)
        self.assertIn("failed to start: cannot create a thread for qmp-reader: ", err)
        self.assertTrue(ft.hostname_works(d))
        self.assertEqual(ft.domstate(d, "vm1"), "shut off (failed)")
        # The VMM was spawned before the monitor failed: it must be gone (its
        # command line names its socket in the daemon's directory).
        def vmms():
            found = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                if b"ferry-vmm" in cmd and d.dir.encode() in cmd:
                    found.append(pid)
            return found
        self.assertTrue(ft.wait_for(lambda: vmms() == [], 10), vmms())

    def test_source_migration_setup(self):
        err = self.migration_fails("source", "migration-setup", tunnelled=True)
        self.assertIn("cannot create a thread for migration-setup: ", err)

    def test_source_tunnel_out(self):
        self.migration_fails("source", "tunnel-out", tunnelled=True)

    def test_source_tunnel_sink(self):
        self.migration_fails("source", "tunnel-sink", tunnelled=True)

    def test_destination_incoming_watchdog(self):
        err = self.migration_fails("destination", "incoming-watchdog", tunnelled=True)
        self.assertIn("cannot create a thread for incoming-watchdog: ", err)

    def test_destination_incoming_accept(self):
        err = self.migration_fails("destination", "incoming-accept", tunnelled=False)
        self.assertIn("cannot create a thread for incoming-accept: ", err)

    def test_source_relay_in(self):
        self.migration_fails("source", "relay-in", tunnelled=False)

    def test_destination_relay_out(self):
        self.migration_fails("destination", "relay-out", tunnelled=False)

    def test_source_relay_out_writer(self):
        self.migration_fails("source", "relay-out-wr", tunnelled=False)

    def test_destination_relay_in_writer(self):
        self.migration_fails("destination", "relay-in-wr", tunnelled=False)


class LogTest(ft.DaemonTestCase):
    def test_client_text_in_the_log_is_escaped(self):
        d = self.start_daemon(extra_conf=SASL_TCP)
        mech = "X\nfake 2026-01-01 error ferryd: injected\x1b[31m" + "A" * 5000
        c = ft.RawClient(d)
        hdr, body = c.call(AUTH_SASL_START, ft.xdr_string(mech) + struct.pack(">iI", 1, 0))
        self.assertEqual(hdr[5], ft.ERROR)
        self.assertEqual(ft.decode_error(body)[0], 45)  # VIR_ERR_AUTH_FAILED
        c.close()
        time.sleep(0.3)
        log = d.log()
        self.assertNotIn("\x1b", log)
        self.assertFalse(any(line.startswith("fake") for line in log.splitlines()))
        shown = mech[:21].replace("\n", "\\n")
        self.assertIn(f"asked for a mechanism name that is no SASL mechanism ({len(mech)} bytes: "
                      f"'{shown}')", log)

    def test_a_warning_a_stranger_can_repeat_is_rate_limited(self):
        d = self.start_daemon()
        s = tcp(d)
        # REPLY messages mean nothing to a server: each is dropped and logged.
        s.sendall(b"".join(ft.message(ft.REMOTE_PROGRAM, GET_HOSTNAME, ft.REPLY, i)
                           for i in range(50)))
        c = ft.RawClient(d)
        c.call(AUTH_LIST)  # the daemon has read everything before it answers this
        c.close()
        s.sendall(ft.message(ft.REMOTE_PROGRAM, AUTH_LIST, ft.CALL, 99))
        self.assertEqual(ft.recv_message(s)[0][4], 99)
        s.close()
        self.assertEqual(len(re.findall(r"dropping unexpected \S+ message", d.log())), 10)


class ConfigFormsTest(ft.DaemonTestCase):
    def test_libvirtds_own_value_forms_load(self):
        # Appended after the harness's own keys, so these win.
        d = ft.Daemon(extra_conf='tcp_port = "PORT"; max_clients = +50\n'
                                 'tls_allowed_dn_list = [\n  "C=GB,*",\n]\n'
                                 'listen_addr = """127.0.0.1"""\n')
        self.daemons.append(d)
        d.port = ft.free_port()
        with open(d.conf) as f:
            text = f.read()
        with open(d.conf, "w") as f:
            f.write(text.replace("PORT", str(d.port)))
        d.start()  # waits for the port given as a string
        self.assertTrue(ft.hostname_works(d))


if __name__ == "__main__":
    unittest.main()
