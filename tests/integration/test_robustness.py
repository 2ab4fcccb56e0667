"""ferryd under load and abuse: many clients, garbage, half messages, a client
that stops reading, a client that stops answering pings. Each misbehaving
client is dealt with while the others keep being served."""

import os
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

GET_HOSTNAME = 59
GET_CAPABILITIES = 7


hostname_works = ft.hostname_works
wait_closed = ft.wait_closed


class ManyClientsTest(ft.DaemonTestCase):
    def test_100_clients_at_once_all_get_answers(self):
        d = self.start_daemon()
        barrier = threading.Barrier(100)
        results = []
        lock = threading.Lock()

        def worker():
            c = ft.RawClient(d, timeout=30)
            try:
                c.open()
                barrier.wait(timeout=30)
                ok = all(c.call(GET_HOSTNAME)[0][5] == ft.OK for _ in range(5))
            except Exception as e:  # noqa: BLE001 - reported below
                ok = repr(e)
            finally:
                c.close()
            with lock:
                results.append(ok)

        threads = [threading.Thread(target=worker) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(len(results), 100)
        self.assertEqual([r for r in results if r is not True], [])

    def test_pipelined_calls_beyond_max_client_requests_are_all_answered(self):
        d = self.start_daemon(extra_conf="max_client_requests = 2\n")
        c = ft.RawClient(d)
        c.open()
        n = 50
        c.sock.sendall(b"".join(ft.message(ft.REMOTE_PROGRAM, GET_HOSTNAME, ft.CALL, 100 + i)
                                for i in range(n)))
        serials = sorted(ft.recv_message(c.sock)[0][4] for _ in range(n))
        self.assertEqual(serials, list(range(100, 100 + n)))
        c.close()

    def test_max_clients_makes_extra_connections_wait_in_the_backlog(self):
        # As libvirtd: at max_clients ferryd stops accepting; a new client
        # waits in the listen backlog and is served once another leaves.
        d = self.start_daemon(extra_conf="max_clients = 3\n")
        time.sleep(0.5)  # the harness's readiness probe must be gone first
        held = [ft.RawClient(d) for _ in range(3)]
        for c in held:
            c.open()
        extra = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        extra.sendall(ft.message(ft.REMOTE_PROGRAM, GET_HOSTNAME, ft.CALL, 7))
        extra.settimeout(1.5)
        with self.assertRaises(socket.timeout):
            extra.recv(1)
        self.assertIn("not accepting new connections for now: 3 clients (max_clients 3)",
                      d.log())
        held.pop().close()
        extra.settimeout(10)
        hdr, _ = ft.recv_message(extra)
        self.assertEqual(hdr[4], 7)  # answered (an error: it never opened a connection)
        extra.close()
        for c in held:
            c.close()
        time.sleep(0.3)
        self.assertTrue(hostname_works(d))
        self.assertIn("accepting new connections again", d.log())


class BadInputTest(ft.DaemonTestCase):
    def test_length_below_header_closes_only_that_connection(self):
        d = self.start_daemon()
        bad = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        bad.sendall(struct.pack(">I", 12) + b"\0" * 8)
        self.assertTrue(wait_closed(bad, 5))
        bad.close()
        self.assertTrue(hostname_works(d))
        self.assertIn("shorter than the 28 byte header", d.log())

    def test_length_above_limit_closes_only_that_connection(self):
        d = self.start_daemon()
        bad = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        bad.sendall(struct.pack(">I", 33554432 + 5) + b"\0" * 24)
        self.assertTrue(wait_closed(bad, 5))
        bad.close()
        self.assertTrue(hostname_works(d))
        self.assertIn("exceeds the 33554436 byte limit", d.log())

    def test_random_garbage_is_dealt_with(self):
        d = self.start_daemon()
        bad = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        bad.sendall(os.urandom(4096))
        self.assertTrue(wait_closed(bad, 5))
        bad.close()
        self.assertTrue(hostname_works(d))

    def test_undecodable_arguments_get_an_error_reply(self):
        d = self.start_daemon()
        c = ft.RawClient(d)
        c.open()
        # LOOKUP_BY_NAME with a string length word pointing past the payload
        hdr, body = c.call(23, struct.pack(">I", 1000) + b"abc\0")
        self.assertEqual(hdr[5], ft.ERROR)
        self.assertIn("unable to decode the payload of procedure 23", ft.decode_error(body)[2])
        self.assertEqual(c.call(GET_HOSTNAME)[0][5], ft.OK)
        c.close()

    def test_unknown_message_type_is_dropped(self):
        d = self.start_daemon()
        c = ft.RawClient(d)
        c.open()
        c.sock.sendall(ft.message(ft.REMOTE_PROGRAM, GET_HOSTNAME, 9, 77))
        self.assertTrue(wait_closed(c.sock, 5))  # unknown type: protocol error, closed
        c.close()
        self.assertTrue(hostname_works(d))

    def test_reply_from_a_client_is_dropped_and_the_connection_survives(self):
        d = self.start_daemon()
        c = ft.RawClient(d)
        c.open()
        c.sock.sendall(ft.message(ft.REMOTE_PROGRAM, GET_HOSTNAME, ft.REPLY, 77))
        self.assertEqual(c.call(GET_HOSTNAME)[0][5], ft.OK)
        c.close()

    def test_disconnect_mid_message(self):
        d = self.start_daemon()
        for cut in (2, 10, 30):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            whole = ft.message(ft.REMOTE_PROGRAM, 23, ft.CALL, 0, ft.OK, ft.xdr_string("vm1"))
            s.sendall(whole[:cut])
            s.close()
        time.sleep(0.3)
        self.assertTrue(hostname_works(d))


class SlowClientTest(ft.DaemonTestCase):
    def test_client_that_stops_reading_does_not_stall_others(self):
        d = self.start_daemon()
        stuck = ft.RawClient(d)
        stuck.open()
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Thousands of capability documents (a few KiB each) fill every buffer
        # between us and the daemon's writer; we never read them.
        payload = b"".join(ft.message(ft.REMOTE_PROGRAM, GET_CAPABILITIES, ft.CALL, 10 + i)
                           for i in range(3000))
        stuck.sock.setblocking(False)
        try:
            stuck.sock.send(payload)
        except BlockingIOError:
            pass
        time.sleep(1)
        start = time.monotonic()
        for _ in range(10):
            self.assertTrue(hostname_works(d))
        self.assertLess(time.monotonic() - start, 20)
        stuck.close()
        time.sleep(0.5)
        self.assertTrue(hostname_works(d))


class KeepaliveTest(ft.DaemonTestCase):
    def ask_keepalive(self, c):
        hdr, body = c.call(60, struct.pack(">i", 10))
        self.assertEqual(struct.unpack(">i", body)[0], 1)

    def test_client_that_stops_answering_pings_is_dropped(self):
        d = self.start_daemon(extra_conf="keepalive_interval = 1\nkeepalive_count = 2\n")
        c = ft.RawClient(d)
        c.open()
        self.ask_keepalive(c)
        start = time.monotonic()
        pings = 0
        c.sock.settimeout(10)
        try:
            while True:
                hdr, _ = ft.recv_message(c.sock)
                if hdr[0] == ft.KEEPALIVE_PROGRAM and hdr[2] == 1:
                    pings += 1
        except (EOFError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - start
        self.assertEqual(pings, 2)
        self.assertGreaterEqual(elapsed, 2.5)
        self.assertLess(elapsed, 6)
        self.assertIn("keepalive timeout", d.log())
        c.close()

    def test_client_that_answers_pings_stays(self):
        d = self.start_daemon(extra_conf="keepalive_interval = 1\nkeepalive_count = 2\n")
        c = ft.RawClient(d)
        c.open()
        self.ask_keepalive(c)
        c.sock.settimeout(1)
        deadline = time.monotonic() + 5
        pings = 0
        while time.monotonic() < deadline:
            try:
                hdr, _ = ft.recv_message(c.sock)
            except socket.timeout:
                continue
            if hdr[0] == ft.KEEPALIVE_PROGRAM and hdr[2] == 1:
                pings += 1
                c.sock.sendall(ft.message(ft.KEEPALIVE_PROGRAM, 2, ft.MESSAGE, 0))
        self.assertGreaterEqual(pings, 3)
        self.assertEqual(c.call(GET_HOSTNAME)[0][5], ft.OK)
        c.close()

    def test_no_pings_for_a_client_that_did_not_ask(self):
        d = self.start_daemon(extra_conf="keepalive_interval = 1\nkeepalive_count = 1\n")
        c = ft.RawClient(d)
        c.open()
        c.sock.settimeout(3.5)
        with self.assertRaises(socket.timeout):
            ft.recv_message(c.sock)
        self.assertEqual(c.call(GET_HOSTNAME)[0][5], ft.OK)
        c.close()

    def test_server_answers_ping_with_pong(self):
        d = self.start_daemon()
        c = ft.RawClient(d)
        c.sock.sendall(ft.message(ft.KEEPALIVE_PROGRAM, 1, ft.MESSAGE, 0))
        hdr, body = ft.recv_message(c.sock)
        self.assertEqual((hdr[0], hdr[2], hdr[3], hdr[4]), (ft.KEEPALIVE_PROGRAM, 2, ft.MESSAGE, 0))
        c.close()


class DaemonStartupTest(ft.DaemonTestCase):
    def test_second_daemon_on_the_same_socket_refuses_to_start(self):
        d = self.start_daemon()
        other = ft.Daemon(listen=False, name="second")
        try:
            with open(other.conf, "a") as f:
                f.write(f'unix_sock_dir = "{d.sock_dir}"\n')
            import subprocess
            p = subprocess.run([ft.FERRYD, "--config", other.conf], capture_output=True, text=True,
                               timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(f"another daemon is already listening on {d.sock}", p.stderr)
        finally:
            other.cleanup()
        self.assertTrue(hostname_works(d))

    def test_unknown_config_key_is_a_usage_error_naming_it(self):
        import subprocess
        d = ft.Daemon()
        try:
            with open(d.conf, "a") as f:
                f.write("listen_tcpp = 1\n")
            with open(d.conf) as f:
                line = len(f.read().splitlines())
            p = subprocess.run([ft.FERRYD, "--config", d.conf], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(p.returncode, 2)
            self.assertIn("unknown configuration key 'listen_tcpp'", p.stderr)
            self.assertIn(f"ferryd.conf:{line}: ", p.stderr)
        finally:
            d.cleanup()

    def test_bad_value_is_a_usage_error_naming_the_key(self):
        import subprocess
        d = ft.Daemon()
        try:
            with open(d.conf, "a") as f:
                f.write("max_clients = \"many\"\n")
            p = subprocess.run([ft.FERRYD, "--config", d.conf], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(p.returncode, 2)
            self.assertIn("max_clients must be a number", p.stderr)
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
