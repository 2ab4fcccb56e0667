"""ferry as `meson install` lays it out (docs/install.md): the files and their
modes, the default config (every key, each loading), the man pages, the
systemd units checked by systemd-analyze, and socket activation driven by
systemd-socket-activate: the sockets ferryd takes by name (TLS too), its
readiness notice, bad names refused, --timeout. The Debian package and the units under a
real systemd are tested by `make deb-check` (tests/package/deb-check)."""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
from test_tls_sasl import Pki  # noqa: E402

SOURCE = os.environ.get("FERRY_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
PREFIX = "/usr/local"  # the build dirs' default prefix
SOCKET_UNITS = ["ferryd.socket", "ferryd-ro.socket", "ferryd-admin.socket", "ferryd-tcp.socket",
                "ferryd-tls.socket"]
SANITIZER_ENV = ["ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"]


def install_tree():
    """`meson install` of the build dir into a fresh DESTDIR; returns it."""
    dest = tempfile.mkdtemp(prefix="ferry-install-")
    p = subprocess.run(["meson", "install", "-C", ft.BUILD, "--destdir", dest, "--no-rebuild",
                        "--quiet"], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        raise AssertionError(f"meson install failed:\n{p.stdout}\n{p.stderr}")
    return dest


def read(path):
    with open(path) as f:
        return f.read()


def config_keys_in_source():
    """The keys ferryd knows: the names in daemon-config.c's key table."""
    text = read(os.path.join(SOURCE, "src/daemon/daemon-config.c"))
    table = text[text.index("static const KeyDef keys[]"):]
    table = table[:table.index("};")]
    return set(re.findall(r"\bKR?\((\w+),", table))


class InstalledLayoutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dest = install_tree()
        cls.root = cls.dest + PREFIX

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dest, ignore_errors=True)

    def mode(self, rel):
        return stat.S_IMODE(os.stat(os.path.join(self.root, rel)).st_mode)

    def test_programs_config_state_dirs_units_man_pages(self):
        for prog in ("sbin/ferryd", "bin/ferry-vmm", "bin/ferry-probe", "bin/ferry-trace"):
            self.assertEqual(self.mode(prog), 0o755, prog)
        self.assertEqual(self.mode("etc/ferry/ferryd.conf"), 0o644)
        # Domain configs are root's only.
        self.assertEqual(self.mode("etc/ferry/sim"), 0o700)
        for unit in ["ferryd.service"] + SOCKET_UNITS:
            self.assertEqual(self.mode("lib/systemd/system/" + unit), 0o644, unit)
        tmpfiles = read(os.path.join(self.root, "lib/tmpfiles.d/ferry.conf"))
        self.assertRegex(tmpfiles, r"(?m)^d /run/ferry 0700 root root")
        for page in ("man8/ferryd.8", "man5/ferryd.conf.5", "man1/ferry-vmm.1",
                     "man1/ferry-probe.1", "man1/ferry-trace.1"):
            self.assertEqual(self.mode("share/man/" + page), 0o644, page)

    def test_every_installed_command_has_a_man_page(self):
        for bindir, sections in (("bin", "1"), ("sbin", "8")):
            for cmd in os.listdir(os.path.join(self.root, bindir)):
                pages = [f"man{n}/{cmd}.{n}" for n in sections + "18"]
                self.assertTrue(any(os.path.exists(os.path.join(self.root, "share/man", p))
                                    for p in pages), f"{bindir}/{cmd} has no man page")

    def test_man_pages_render_without_warnings(self):
        for page, title in (("man8/ferryd.8", "FERRYD(8)"), ("man5/ferryd.conf.5", "FERRYD.CONF(5)"),
                            ("man1/ferry-vmm.1", "FERRY-VMM(1)"),
                            ("man1/ferry-probe.1", "FERRY-PROBE(1)"),
                            ("man1/ferry-trace.1", "FERRY-TRACE(1)")):
            p = subprocess.run(["man", "--warnings", "-l", os.path.join(self.root, "share/man", page)],
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0"))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr, "", f"{page}: {p.stderr}")
            text = re.sub(r".\x08", "", p.stdout)  # bold and underline overstrikes
            self.assertIn(title, text)
            self.assertRegex(text, r"NAME\n\s+\S+\s+-\s+\S")

    def test_default_config_and_man_page_name_every_key(self):
        known = config_keys_in_source()
        conf = read(os.path.join(self.root, "etc/ferry/ferryd.conf"))
        self.assertNotRegex(conf, r"(?m)^[a-z_]+\s*=", "every key is commented out")
        commented = set(re.findall(r"(?m)^#(\w+) = ", conf))
        self.assertEqual(known - commented, set(), "keys missing from data/ferryd.conf")
        self.assertEqual(commented - known, set(), "data/ferryd.conf has keys ferryd does not know")
        man = read(os.path.join(SOURCE, "docs/man/ferryd.conf.5.md"))
        documented = set(re.findall(r"\*\*(\w+)\*\*", man))
        self.assertEqual(known - documented, set(), "keys missing from docs/man/ferryd.conf.5.md")

    def test_default_config_uncommented_loads_and_serves(self):
        """Every commented line is a valid setting: uncommented, ferryd starts
        with it (paths overridden to a temp dir) and serves virsh."""
        d = ft.Daemon(listen=False)
        try:
            conf = read(os.path.join(self.root, "etc/ferry/ferryd.conf"))
            uncommented = re.sub(r"(?m)^#(\w+ = )", r"\1", conf)
            with open(d.conf, "w") as f:
                f.write(uncommented + "\n# test overrides\n" +
                        f'unix_sock_dir = "{d.sock_dir}"\n'
                        f'domain_config_dir = "{d.dir}/config"\ndomain_run_dir = "{d.dir}/run"\n'
                        f'qemu_config_dir = "{d.dir}/config/qemu"\nqemu_run_dir = "{d.dir}/run/qemu"\n'
                        f'storage_config_dir = "{d.dir}/config/storage"\n'
                        f'storage_run_dir = "{d.dir}/run/storage"\n'
                        f'vmm_binary = "{self.root}/bin/ferry-vmm"\n')
            installed = os.path.join(self.root, "sbin/ferryd")
            _start_with(d, installed)
            self.assertIn("Id", ft.virsh(d.unix_uri, "list", "--all")[1])
            self.assertEqual(d.stop(), 0, d.log())
            self.assertIsNone(d.sanitizer_report())
        finally:
            d.cleanup()

    def test_installed_ferryd_finds_the_installed_vmm(self):
        """sbin/ferryd without vmm_binary runs bin/ferry-vmm of its own install."""
        d = ft.Daemon(listen=False)
        try:
            _start_with(d, os.path.join(self.root, "sbin/ferryd"))
            xml = ft.write_file(d.dir, "vm1.xml", ft.domain_xml("vm1"))
            ft.virsh(d.unix_uri, "create", xml)
            pid = ft.vmm_pids(d)[0]
            self.assertEqual(os.readlink(f"/proc/{pid}/exe"), os.path.join(self.root, "bin/ferry-vmm"))
            ft.virsh(d.unix_uri, "destroy", "vm1")
            self.assertEqual(d.stop(), 0, d.log())
        finally:
            d.cleanup()

    def test_units_pass_systemd_analyze_verify(self):
        """systemd-analyze verify on the installed units, with the man pages
        they cite looked up in the install. ExecStart names PREFIX/sbin/ferryd,
        which is in DESTDIR here: the copies verified point there."""
        unitdir = os.path.join(self.root, "lib/systemd/system")
        check = tempfile.mkdtemp(prefix="ferry-units-")
        try:
            for unit in ["ferryd.service"] + SOCKET_UNITS:
                text = read(os.path.join(unitdir, unit))
                text = text.replace(PREFIX + "/sbin/ferryd", self.root + "/sbin/ferryd")
                ft.write_file(check, unit, text)
            p = subprocess.run(["systemd-analyze", "verify"] +
                               [os.path.join(check, u) for u in ["ferryd.service"] + SOCKET_UNITS],
                               capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, MANPATH=os.path.join(self.root, "share/man")))
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertEqual(p.stderr.strip(), "", p.stderr)
        finally:
            shutil.rmtree(check, ignore_errors=True)

        service = read(os.path.join(unitdir, "ferryd.service"))
        # VMs must survive a restart: systemd signals ferryd alone.
        self.assertRegex(service, r"(?m)^KillMode=process$")
        self.assertRegex(service, r"(?m)^Type=notify$")
        self.assertRegex(service, r"(?m)^ExecStart=/usr/local/sbin/ferryd --config "
                                  r"/usr/local/etc/ferry/ferryd.conf \$FERRYD_ARGS$")
        for unit in SOCKET_UNITS:
            text = read(os.path.join(unitdir, unit))
            self.assertRegex(text, r"(?m)^Service=ferryd.service$", unit)
            # The fd name is the unit's name: ferryd must know it.
            self.assertNotIn("FileDescriptorName", text)


def _start_with(daemon, ferryd):
    """Starts a ft.Daemon with another ferryd binary (the installed one)."""
    saved = ft.FERRYD
    ft.FERRYD = ferryd
    try:
        daemon.start()
    finally:
        ft.FERRYD = saved


class ActivatedDaemon(ft.Daemon):
    """ferryd started by systemd-socket-activate, which opens the sockets,
    names them, and execs ferryd on the first connection."""

    def __init__(self, names=None, extra_args=(), notify=None, **kw):
        super().__init__(**kw)
        self.sock_admin = os.path.join(self.sock_dir, "libvirt-admin-sock")
        os.makedirs(self.sock_dir)
        self.names = names if names is not None else [
            "ferryd.socket", "ferryd-ro.socket", "ferryd-admin.socket", "ferryd-tcp.socket"]
        self.extra_args = list(extra_args)
        self.notify = notify
        self.tls_port = ft.free_port()

    def start(self, timeout=15):
        # systemd-socket-activate hands its child a clean environment.
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env_args = [f"--setenv={v}={env[v]}" for v in SANITIZER_ENV if v in env]
        if self.notify:
            env_args.append("--setenv=NOTIFY_SOCKET=" + self.notify)
        listen = [self.sock, self.sock_ro, self.sock_admin, f"127.0.0.1:{self.port}",
                  f"127.0.0.1:{self.tls_port}"]
        args = ["systemd-socket-activate"]
        listen = listen[:max(len(self.names), 1)]
        for addr in listen:
            args += ["-l", addr]
        if self.names:
            args.append("--fdname=" + ":".join(self.names))
        args += env_args + [ft.FERRYD, "--config", self.conf] + self.extra_args
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT)
        # systemd-socket-activate listens first and execs ferryd on the first
        # connection: wait until it says it listens on the last socket (after
        # listen()), without connecting.
        last = f"Listening on {listen[-1]} as {2 + len(listen)}."
        if not ft.wait_for(lambda: last in self.log(), timeout):
            raise RuntimeError("systemd-socket-activate did not listen:\n" + self.log())
        return self

    def ferryd_started(self):
        return "ready (pid" in self.log()


class SocketActivationTest(ft.DaemonTestCase):
    def activated(self, **kw):
        d = ActivatedDaemon(**kw)
        self.daemons.append(d)
        return d.start()

    def test_takes_every_socket_by_name_and_serves_each(self):
        d = self.activated()
        self.assertFalse(d.ferryd_started(), "ferryd runs only once a client connects")
        self.assertIn("Id", ft.virsh(d.unix_uri, "list", "--all")[1])
        log = d.log()
        for name, what in (("ferryd.socket", "unix " + d.sock),
                           ("ferryd-ro.socket", "unix " + d.sock_ro + " (read-only)"),
                           ("ferryd-admin.socket", "unix " + d.sock_admin),
                           ("ferryd-tcp.socket", f"tcp 127.0.0.1:{d.port}")):
            self.assertRegex(log, re.escape(f"listening on {what}") + r".*" + re.escape(name))
        # Served: read-write UNIX, TCP; read-only refuses a change; the admin
        # socket serves virt-admin.
        xml = ft.write_file(d.dir, "vm1.xml", ft.domain_xml("vm1"))
        ft.virsh(d.tcp_uri, "define", xml)
        rc, _, err = ft.virsh(f"sim+unix:///system?socket={d.sock_ro}", "undefine", "vm1",
                              check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("read only access prevents", err)
        p = subprocess.run(["virt-admin", "-c", f"libvirtd:///system?socket={d.sock_admin}",
                            "server-list"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("libvirtd", p.stdout)
        # The VMMs never see the activation variables.
        ft.virsh(d.unix_uri, "start", "vm1")
        pid = ft.vmm_pids(d)[0]
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
        self.assertFalse([v for v in env if v.startswith((b"LISTEN_", b"NOTIFY_SOCKET"))], env)
        ft.virsh(d.unix_uri, "destroy", "vm1")
        # Sockets systemd made are systemd's: ferryd leaves them at exit.
        self.assertEqual(d.stop(), 0, d.log())
        self.assertTrue(os.path.exists(d.sock))

    def test_tls_socket_from_systemd(self):
        pki = Pki()
        try:
            names = ["ferryd.socket", "ferryd-ro.socket", "ferryd-admin.socket",
                     "ferryd-tcp.socket", "ferryd-tls.socket"]
            # The config's TLS files apply; its listen_tls and tls_port do not.
            d = self.activated(names=names, extra_conf=pki.server_conf(port=ft.free_port()))
            uri = f"sim+tls://127.0.0.1:{d.tls_port}/system?pkipath={pki.client_dir()}"
            self.assertIn("Id", ft.virsh(uri, "list", "--all")[1])
            self.assertIn(f"listening on tls 127.0.0.1:{d.tls_port} (auth none, ferryd-tls.socket)",
                          d.log())
            self.assertEqual(d.stop(), 0, d.log())
        finally:
            pki.cleanup()

    def test_missing_unix_socket_is_created_and_tcp_stays_closed(self):
        d = self.activated(names=["ferryd.socket"])
        ft.virsh(d.unix_uri, "list")
        log = d.log()
        self.assertIn(f"listening on {d.sock_ro} (read-only)", log)  # made by ferryd
        self.assertNotIn("listening on tcp", log)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
        ft.virsh(f"sim+unix:///system?socket={d.sock_ro}", "list")
        self.assertEqual(d.stop(), 0, d.log())
        self.assertFalse(os.path.exists(d.sock_ro), "ferryd removes the sockets it made")

    def test_notify_ready_and_stopping(self):
        sock_dir = tempfile.mkdtemp(prefix="ferry-notify-")
        path = os.path.join(sock_dir, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
            n.bind(path)
            n.settimeout(20)
            d = self.activated(notify=path)
            ft.virsh(d.unix_uri, "list")
            self.assertEqual(n.recv(4096), b"READY=1")
            self.assertEqual(d.stop(), 0, d.log())
            self.assertEqual(n.recv(4096), b"STOPPING=1")
        shutil.rmtree(sock_dir, ignore_errors=True)

    def expect_refused(self, d, rc, text):
        # The first connection execs ferryd, which refuses and exits.
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.sock)
        d.proc.wait(20)
        d.logf.close()
        self.daemons.remove(d)  # its non-zero exit is the point
        log = d.log()
        d.cleanup()
        self.assertEqual(d.proc.returncode, rc, log)
        self.assertIn(text, log)
        self.assertNotIn("Sanitizer", log)

    def test_unknown_or_missing_names_and_listen_are_refused(self):
        d = self.activated(names=["ferryd.socket", "bogus.socket"])
        self.expect_refused(d, 1, "socket activation: unknown socket name 'bogus.socket' (fd 4)")
        d = self.activated(names=[])
        self.expect_refused(d, 1, "each socket needs a name (FileDescriptorName=)")
        d = self.activated(extra_args=["--listen"])
        self.expect_refused(d, 2, "--listen cannot be used with socket activation")

    def test_timeout_exits_when_idle_but_not_while_a_domain_runs(self):
        d = self.activated(extra_args=["--timeout", "2"])
        xml = ft.write_file(d.dir, "vm1.xml", ft.domain_xml("vm1"))
        ft.virsh(d.unix_uri, "create", xml)
        pid = ft.vmm_pids(d)[0]
        time.sleep(5)  # idle clients-wise for over twice the timeout
        self.assertIsNone(d.proc.poll(), "ferryd exited while a domain runs:\n" + d.log())
        ft.virsh(d.unix_uri, "destroy", "vm1")
        self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(pid), 10))
        # Now idle: it exits by itself, cleanly.
        d.proc.wait(30)
        d.logf.close()
        self.assertEqual(d.proc.returncode, 0, d.log())
        self.assertIn("no client and no running domain for 2 s (--timeout): exiting", d.log())

    def test_timeout_waits_while_a_qemu_domain_runs(self):
        """The idle check asks every driver, not only the sim driver."""
        d = self.activated(extra_args=["--timeout", "2"])
        xml = ft.write_file(d.dir, "q1.xml", """<domain type='qemu'>
  <name>q1</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/></devices>
</domain>
""")
        uri = f"qemu+unix:///system?socket={d.sock}"
        ft.virsh(uri, "create", xml)
        time.sleep(5)  # idle clients-wise for over twice the timeout
        self.assertIsNone(d.proc.poll(), "ferryd exited while a QEMU domain runs:\n" + d.log())
        ft.virsh(uri, "destroy", "q1")
        d.proc.wait(30)
        d.logf.close()
        self.assertEqual(d.proc.returncode, 0, d.log())

    def test_timeout_waits_for_a_connected_client(self):
        d = self.activated(extra_args=["--timeout", "1"])
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.sock)
            self.assertTrue(ft.wait_for(d.ferryd_started, 15))
            time.sleep(3)
            self.assertIsNone(d.proc.poll(), "ferryd exited with a client connected")
        d.proc.wait(30)
        d.logf.close()
        self.assertEqual(d.proc.returncode, 0, d.log())


if __name__ == "__main__":
    unittest.main()
