"""libvirt's admin protocol on libvirt-admin-sock, driven by the stock virt-admin
(Debian's libvirt-clients 9.0) against real daemons: servers, worker pools and
client limits read and changed, clients listed with their details and
disconnected while python3-libvirt holds them, log filters and outputs
changed at runtime and seen in the log files, bad values refused by name,
procedures ferryd does not implement refused by name, other users refused."""

import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
from test_tls_sasl import SaslTestCase  # noqa: E402

import libvirt  # noqa: E402

ADMIN_PROGRAM = 0x06900690


def admin_sock(d):
    return os.path.join(d.sock_dir, "libvirt-admin-sock")


def virt_admin(d, *args, check=True, prefix=(), timeout=60):
    """Runs the stock virt-admin on the daemon's admin socket; (rc, out, err)."""
    env = dict(os.environ)
    env.pop("LIBVIRT_ADMIN_DEFAULT_URI", None)
    uri = f"libvirtd:///system?socket={admin_sock(d)}"
    p = subprocess.run([*prefix, "virt-admin", "-c", uri, *args], capture_output=True,
                       text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"virt-admin {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p.returncode, p.stdout, p.stderr


def fields(out):
    """'name   : value' lines of virt-admin's output, as a dict."""
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^(\w+)\s*: ?(.*)$", out, re.M)}


def table(out):
    """The rows under the dashes of a virt-admin table, as lists of columns."""
    rows = out.split("\n")
    start = next(i for i, line in enumerate(rows) if line.startswith("---"))
    return [line.split() for line in rows[start + 1:] if line.strip()]


def client_ids(d, server="libvirtd"):
    return [int(r[0]) for r in table(virt_admin(d, "client-list", server)[1])]


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


class AdminTestCase(ft.DaemonTestCase):
    def make_dir(self):
        path = tempfile.mkdtemp(prefix="ferry-admin-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def find_client(self, d, **want):
        """The id of the one libvirtd client whose client-info has these values."""
        found = []
        for cid in client_ids(d):
            rc, out, _ = virt_admin(d, "client-info", "libvirtd", str(cid), check=False)
            info = fields(out)
            if rc == 0 and all(info.get(k) == v for k, v in want.items()):
                found.append((cid, info))
        self.assertEqual(len(found), 1, f"clients matching {want}: {found}")
        return found[0]


class ServersTest(AdminTestCase):
    def test_servers_and_their_limits_come_from_the_config(self):
        # admin_* keys in the forms libvirtd.conf takes (a sign, ';' between statements).
        d = self.start_daemon(extra_conf="max_workers = 12\nmax_clients = 40\n"
                                         "max_anonymous_clients = 7\n"
                                         "admin_max_workers = +3; admin_max_clients = 4\n"
                                         "admin_min_workers = 1\nadmin_max_queued_clients = 2\n"
                                         "admin_max_client_requests = 5\n"
                                         "admin_keepalive_interval = -1\n"
                                         "admin_keepalive_count = 0\n")
        rows = table(virt_admin(d, "server-list")[1])
        self.assertEqual([r[1] for r in rows], ["libvirtd", "admin"])
        self.assertEqual(virt_admin(d, "srv-list")[1], virt_admin(d, "server-list")[1])

        pool = fields(virt_admin(d, "server-threadpool-info", "libvirtd")[1])
        self.assertEqual(pool["maxWorkers"], "12")
        self.assertEqual(pool["minWorkers"], "0")
        self.assertEqual(pool["prioWorkers"], "0")
        pool = fields(virt_admin(d, "server-threadpool-info", "admin")[1])
        self.assertEqual(pool["maxWorkers"], "3")
        # The call asking runs in one of the admin server's own workers.
        self.assertGreaterEqual(int(pool["nWorkers"]), 1)
        self.assertEqual(int(pool["freeWorkers"]), int(pool["nWorkers"]) - 1, pool)
        self.assertEqual(pool["jobQueueDepth"], "0")

        limits = fields(virt_admin(d, "server-clients-info", "libvirtd")[1])
        self.assertEqual((limits["nclients_max"], limits["nclients_unauth_max"]), ("40", "7"))
        limits = fields(virt_admin(d, "server-clients-info", "admin")[1])
        self.assertEqual(limits["nclients_max"], "4")
        self.assertEqual(limits["nclients"], "1")  # virt-admin itself

        rc, _, err = virt_admin(d, "server-threadpool-info", "nosuch", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("Server not found: no server with matching name 'nosuch'", err)

    def test_threadpool_set_changes_the_real_limit_and_refuses_what_ferryd_lacks(self):
        d = self.start_daemon()
        virt_admin(d, "server-threadpool-set", "libvirtd", "--max-workers", "7")
        self.assertEqual(fields(virt_admin(d, "server-threadpool-info", "libvirtd")[1])
                         ["maxWorkers"], "7")
        self.assertIn("maxWorkers of server 'libvirtd' changed from 20 to 7", d.log())
        for opt, name in (("--min-workers", "minWorkers"), ("--priority-workers", "prioWorkers")):
            rc, _, err = virt_admin(d, "server-threadpool-set", "libvirtd", opt, "2",
                                    "--max-workers", "9", check=False)
            self.assertNotEqual(rc, 0)
            self.assertIn(f"argument unsupported: {name}", err)
        rc, _, err = virt_admin(d, "server-threadpool-set", "libvirtd", "--max-workers", "0",
                                check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("maxWorkers must be at least 1", err)
        # Nothing of a refused request was applied.
        self.assertEqual(fields(virt_admin(d, "server-threadpool-info", "libvirtd")[1])
                         ["maxWorkers"], "7")
        # The calls still run with the new limit.
        ft.virsh(d.unix_uri, "list", "--all")

    def test_raising_max_workers_runs_a_call_queued_behind_the_only_worker(self):
        """One worker, held by a migration whose destination never answers: a
        virsh call waits in the queue (virt-admin sees it, on the admin
        server's own workers) until virt-admin raises maxWorkers."""
        d = self.start_daemon(extra_conf="max_workers = 1\n")
        xml = ft.write_file(d.dir, "vm.xml", ft.domain_xml("vm1", memory_mib=16))
        ft.virsh(d.tcp_uri, "define", xml)
        ft.virsh(d.tcp_uri, "start", "vm1")
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        silent.settimeout(60)
        env = dict(os.environ)
        env.pop("LIBVIRT_DEFAULT_URI", None)
        mig = subprocess.Popen(
            ["virsh", "-c", d.tcp_uri, "migrate", "--live", "--p2p", "vm1",
             f"sim+tcp://127.0.0.1:{silent.getsockname()[1]}/system"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        waiting = None
        try:
            held, _ = silent.accept()  # the only worker waits for our AUTH_LIST reply
            pool = fields(virt_admin(d, "server-threadpool-info", "libvirtd")[1])
            self.assertEqual((pool["maxWorkers"], pool["nWorkers"], pool["freeWorkers"]),
                             ("1", "1", "0"), pool)
            waiting = subprocess.Popen(["virsh", "-c", d.unix_uri, "hostname"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=env)
            # virsh connects (a UNIX client appears) and its calls wait for a
            # worker (virsh's migration may have queued some of its own).
            self.assertTrue(ft.wait_for(lambda: "unix" in [
                r[1] for r in table(virt_admin(d, "client-list", "libvirtd")[1])], 20))
            self.assertTrue(ft.wait_for(lambda: int(fields(virt_admin(
                d, "server-threadpool-info", "libvirtd")[1])["jobQueueDepth"]) >= 1, 20))
            self.assertIsNone(waiting.poll())
            virt_admin(d, "server-threadpool-set", "libvirtd", "--max-workers", "2")
            out, err = waiting.communicate(timeout=30)
            self.assertEqual((waiting.returncode, out.strip()), (0, socket.gethostname()), err)
            self.assertIsNone(mig.poll(), "the migration still holds the first worker")
            held.close()
            _, err = mig.communicate(timeout=60)
            self.assertNotEqual(mig.returncode, 0)
        finally:
            for p in (mig, waiting):
                if p and p.poll() is None:
                    p.kill()
                    p.communicate()
            silent.close()
        ft.virsh(d.tcp_uri, "destroy", "vm1")

    def test_client_limits_bite_at_once_and_lift_at_once(self):
        d = self.start_daemon()
        conn = libvirt.open(d.unix_uri)
        self.addCleanup(conn.close)
        self.assertEqual(fields(virt_admin(d, "server-clients-info", "libvirtd")[1])
                         ["nclients"], str(len(client_ids(d))))
        rc, _, err = virt_admin(d, "server-clients-set", "libvirtd", "--max-clients", "5",
                                check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("nclients_max (5) must not be below nclients_unauth_max (20)", err)

        virt_admin(d, "server-clients-set", "libvirtd", "--max-clients", "1",
                   "--max-unauth-clients", "0")
        limits = fields(virt_admin(d, "server-clients-info", "libvirtd")[1])
        self.assertEqual((limits["nclients_max"], limits["nclients_unauth_max"]), ("1", "0"))
        # A new connection waits in the listen backlog, unanswered...
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
            s.sendall(ft.message(ft.REMOTE_PROGRAM, 66, ft.CALL, 1))  # AUTH_LIST
            s.settimeout(1.5)
            with self.assertRaises(socket.timeout):
                s.recv(4)
            # ... until the limit is raised: then it is accepted and answered.
            virt_admin(d, "server-clients-set", "libvirtd", "--max-clients", "50")
            s.settimeout(10)
            hdr, _ = ft.recv_message(s)
            self.assertEqual(hdr[5], ft.OK)
        self.assertEqual(conn.getHostname(), socket.gethostname())


class ClientsTest(AdminTestCase):
    def test_clients_listed_with_details_and_disconnected(self):
        d = self.start_daemon()
        rw = libvirt.open(d.unix_uri)
        ro = libvirt.openReadOnly(d.tcp_uri)
        self.addCleanup(ro.close)
        rows = {int(r[0]): r[1] for r in table(virt_admin(d, "client-list", "libvirtd")[1])}
        self.assertIn("unix", rows.values())
        self.assertIn("tcp", rows.values())

        # python3-libvirt runs in this process: its UNIX connection carries our pid.
        rw_id, info = self.find_client(d, unix_process_id=str(os.getpid()))
        self.assertEqual(rows[rw_id], "unix")
        self.assertEqual(info["transport"], "unix")
        self.assertEqual(info["readonly"], "no")
        self.assertEqual(info["unix_user_id"], str(os.getuid()))
        self.assertEqual(info["unix_group_id"], str(os.getgid()))
        self.assertEqual(info["unix_user_name"], __import__("pwd").getpwuid(os.getuid()).pw_name)
        self.assertRegex(info["connection_time"], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
        self.assertNotIn("sock_addr", info)

        ro_id, info = self.find_client(d, readonly="yes")
        self.assertEqual((rows[ro_id], info["transport"]), ("tcp", "tcp"))
        self.assertRegex(info["sock_addr"], r"^127\.0\.0\.1:\d+$")
        self.assertNotIn("unix_user_id", info)

        # Disconnected by the daemon: the client's next call fails, and it
        # leaves the list; the other client goes on.
        virt_admin(d, "client-disconnect", "libvirtd", str(rw_id))
        with self.assertRaises(libvirt.libvirtError):
            rw.getHostname()
        self.assertTrue(ft.wait_for(lambda: rw_id not in client_ids(d), 10), client_ids(d))
        self.assertIn(f"disconnecting client {rw_id} ", d.log())
        self.assertEqual(ro.getHostname(), socket.gethostname())

        rc, _, err = virt_admin(d, "client-disconnect", "libvirtd", str(rw_id), check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn(f"Client not found: no client with matching id '{rw_id}'", err)

    def test_admin_clients_are_listed_on_the_admin_server(self):
        d = self.start_daemon()
        rows = table(virt_admin(d, "client-list", "admin")[1])
        self.assertEqual(len(rows), 1, rows)  # this virt-admin
        self.assertEqual(rows[0][1], "unix")
        rc, _, err = virt_admin(d, "client-info", "admin", rows[0][0], check=False)
        self.assertNotEqual(rc, 0, "the listing virt-admin is gone: another one asks")
        self.assertIn("Client not found", err)


class TlsSaslClientTest(SaslTestCase):
    def test_client_info_names_the_sasl_user_and_the_certificate(self):
        d = self.sasl_daemon()

        def credentials(creds, _):
            for cred in creds:
                cred[4] = "alice" if cred[0] == libvirt.VIR_CRED_AUTHNAME else "secret1"
            return 0

        conn = libvirt.openAuth(self.tls_uri(d, self.pki.client_dir()),
                                [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE],
                                 credentials, None], 0)
        self.addCleanup(conn.close)
        rows = table(virt_admin(d, "client-list", "libvirtd")[1])
        tls = [int(r[0]) for r in rows if r[1] == "tls"]
        self.assertEqual(len(tls), 1, rows)
        info = fields(virt_admin(d, "client-info", "libvirtd", str(tls[0]))[1])
        self.assertEqual(info["transport"], "tls")
        self.assertEqual(info["sasl_user_name"], "alice")
        self.assertIn("CN=y", info["tls_x509_dname"])
        self.assertIn("O=x", info["tls_x509_dname"])
        self.assertRegex(info["sock_addr"], r"^127\.0\.0\.1:\d+$")


class LoggingTest(AdminTestCase):
    def debug_lines_for_virsh(self, d, text):
        """The rpc.server debug lines of the virsh client on the read-write socket."""
        return re.findall(r"debug rpc\.server: new client .* on unix " + re.escape(d.sock) + "$",
                          text, re.M)

    def test_filters_change_at_runtime_and_a_malformed_one_is_refused(self):
        log = os.path.join(self.make_dir(), "ferryd.log")
        d = self.start_daemon(extra_conf=f'log_level = 3\nlog_outputs = "1:file:{log}"\n')
        self.assertIn("Logging filters: \n", virt_admin(d, "daemon-log-filters")[1] + "\n")
        ft.virsh(d.unix_uri, "list", "--all")
        self.assertEqual(self.debug_lines_for_virsh(d, read(log)), [])

        virt_admin(d, "daemon-log-filters", "--filters", "1:rpc.server 4:*")
        self.assertIn("Logging filters: 1:rpc.server 4:*",
                      virt_admin(d, "daemon-log-filters")[1])
        ft.virsh(d.unix_uri, "list", "--all")
        self.assertEqual(len(self.debug_lines_for_virsh(d, read(log))), 1, read(log))

        rc, _, err = virt_admin(d, "daemon-log-filters", "--filters", "1:remote 9:tunnel",
                                check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("invalid argument: log filter '9:tunnel'", err)
        self.assertIn("Logging filters: 1:rpc.server 4:*",
                      virt_admin(d, "daemon-log-filters")[1])
        rc, _, err = virt_admin(d, "daemon-log-filters", "--filters", "1:", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("'1:'", err)

        # Back to none: log_level alone decides again.
        virt_admin(d, "daemon-log-filters", "--filters", "")
        ft.virsh(d.unix_uri, "list", "--all")
        self.assertEqual(len(self.debug_lines_for_virsh(d, read(log))), 1, read(log))
        self.assertIn('log filters changed by virt-admin from "1:rpc.server 4:*" to ""', read(log))

    def test_outputs_change_at_runtime_and_a_bad_one_keeps_the_old(self):
        tmp = self.make_dir()
        first, second = os.path.join(tmp, "first.log"), os.path.join(tmp, "second.log")
        d = self.start_daemon(extra_conf=f'log_filters = "1:rpc.server"\n'
                                         f'log_outputs = "1:file:{first}"\n')
        self.assertIn(f"Logging outputs: 1:file:{first}", virt_admin(d, "daemon-log-outputs")[1])
        ft.virsh(d.unix_uri, "list", "--all")
        self.assertEqual(len(self.debug_lines_for_virsh(d, read(first))), 1)

        virt_admin(d, "daemon-log-outputs", "--outputs", f"1:file:{second} 4:stderr")
        self.assertIn(f"Logging outputs: 1:file:{second} 4:stderr",
                      virt_admin(d, "daemon-log-outputs")[1])
        before = read(first)
        ft.virsh(d.unix_uri, "list", "--all")
        self.assertEqual(read(first), before, "the old output still receives lines")
        self.assertEqual(len(self.debug_lines_for_virsh(d, read(second))), 1, read(second))

        # An output's priority applies: at 3 the debug lines stop.
        virt_admin(d, "daemon-log-outputs", "--outputs", f"3:file:{second}")
        ft.virsh(d.unix_uri, "list", "--all")
        self.assertEqual(len(self.debug_lines_for_virsh(d, read(second))), 1, read(second))

        for bad, named in (("1:file:relative.log", "'1:file:relative.log'"),
                           ("1:network:host", "'1:network:host'"),
                           ("1:file:/nonexistent-ferry-dir/x.log",
                            "/nonexistent-ferry-dir/x.log")):
            rc, _, err = virt_admin(d, "daemon-log-outputs", "--outputs", bad, check=False)
            self.assertNotEqual(rc, 0, bad)
            self.assertIn(named, err)
            self.assertIn(f"Logging outputs: 3:file:{second}",
                          virt_admin(d, "daemon-log-outputs")[1])


class RefusalsTest(AdminTestCase):
    def test_procedures_ferryd_lacks_are_refused_by_name(self):
        d = self.start_daemon()
        rc, _, err = virt_admin(d, "server-update-tls", "libvirtd", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("ferryd does not implement the admin procedure SERVER_UPDATE_TLS_FILES "
                      "(virt-admin server-update-tls)", err)
        # A procedure number no admin client knows: an error reply, not silence.
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(admin_sock(d))
            s.sendall(ft.message(ADMIN_PROGRAM, 999, ft.CALL, 7))
            hdr, body = ft.recv_message(s)
            self.assertEqual((hdr[0], hdr[2], hdr[4], hdr[5]), (ADMIN_PROGRAM, 999, 7, ft.ERROR))
            self.assertIn("unknown procedure: 999", ft.decode_error(body)[2])
            # Flags no admin call takes are refused, naming the call.
            s.sendall(ft.message(ADMIN_PROGRAM, 1, ft.CALL, 8, payload=struct.pack(">I", 4)))
            hdr, body = ft.recv_message(s)
            self.assertEqual(hdr[5], ft.ERROR)
            self.assertIn("unsupported flags (0x4) in CONNECT_OPEN", ft.decode_error(body)[2])

    def test_admin_socket_is_root_only_and_other_users_are_refused(self):
        d = self.start_daemon()
        self.assertEqual(stat.S_IMODE(os.stat(admin_sock(d)).st_mode), 0o700)
        d.stop()
        # Even where the socket's mode lets anyone connect, only the daemon's
        # own user is served.
        d = self.start_daemon(extra_conf='unix_sock_admin_perms = "0777"\n')
        self.assertEqual(stat.S_IMODE(os.stat(admin_sock(d)).st_mode), 0o777)
        for path in (d.dir, d.sock_dir):
            os.chmod(path, 0o755)
        # A uid no account has, which no other test uses.
        stranger = ["setpriv", "--reuid=48123", "--regid=48123", "--clear-groups"]
        rc, _, err = virt_admin(d, "server-list", prefix=stranger, check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("disallowing admin client", err, (rc, _, err))
        self.assertIn("refusing admin client", d.log())
        virt_admin(d, "server-list")


class DaemonTimeoutTest(AdminTestCase):
    def test_an_idle_daemon_exits_after_the_timeout_virt_admin_sets(self):
        d = self.start_daemon()
        virt_admin(d, "daemon-timeout", "--timeout", "1")
        # No client once virt-admin has gone, no domain: ferryd stops cleanly.
        self.assertEqual(d.proc.wait(timeout=60), 0, d.log())
        self.assertIn("virt-admin set the idle timeout: exiting after 1 s", d.log())
        self.assertIn("(--timeout): exiting", d.log())

    def test_zero_turns_the_timeout_off(self):
        d = self.start_daemon()
        # One session: while it is connected the daemon is not idle, so the
        # 1 s never runs out before the 0.
        virt_admin(d, "daemon-timeout --timeout 1; daemon-timeout --timeout 0")
        self.assertIn("virt-admin turned the idle timeout off", d.log())
        time.sleep(3)
        self.assertIsNone(d.proc.poll(), d.log())
        ft.virsh(d.unix_uri, "hostname")


class ConfigTest(unittest.TestCase):
    def test_bad_admin_values_are_refused_naming_the_key(self):
        for conf, key in (("admin_max_workers = 0\n", "admin_max_workers"),
                          ("admin_max_clients = -1\n", "admin_max_clients"),
                          ('admin_keepalive_interval = "5"\n', "admin_keepalive_interval"),
                          ('unix_sock_admin_perms = "999"\n', "unix_sock_admin_perms")):
            d = ft.Daemon(extra_conf=conf)
            try:
                with self.assertRaises(RuntimeError) as cm:
                    d.start()
                self.assertEqual(d.proc.returncode, 2, d.log())
                self.assertIn(key, str(cm.exception))
            finally:
                d.cleanup()


if __name__ == "__main__":
    unittest.main()
