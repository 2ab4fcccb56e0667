"""Two real libvirtd 9.0 (Debian's libvirt-daemon, libvirt-daemon-driver-qemu)
on one machine behaving as two hosts, for the benchmark's anchor rows
(../shared/design/QEMU.md, "Running two real libvirtd").

Each daemon runs in its own UTS and mount namespace (`unshare --uts --mount
--propagation private`) with its own hostname, and sees:

* /etc/libvirt: a bind mount of DIR/etc (libvirtd.conf, qemu.conf written here);
  /etc/passwd and /etc/group: copies that add the `libvirt-qemu` user Debian's
  libvirtd insists on (only libvirt-daemon-system creates it);
* /run and /var: overlays whose upper layers are DIR/run.up and DIR/var.up, so
  /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt exist
  only in the daemon's namespace and its files are readable from the host
  under DIR (`host_path()`); nothing is created on the host's /etc, /run or /var;
* SHARED (/var/lib/libvirt/bench): a bind mount of DIR/share, where guest
  consoles go (a UNIX socket is only reachable through a bind mount, not
  through an overlay's upper layer).

Both stay in the root network namespace and listen on their own loopback
address (127.0.0.2, 127.0.0.3: no setup needed) on free ports, TCP with
`auth_tcp = "none"` and TLS with the bench's certificates. The QEMU driver runs
guests as root without cgroups, namespaces or a security driver, logs QEMU's
output to files (no virtlogd), migrates natively on the daemon's own address,
and has QEMU's TLS directory for `--tls`.

The caller owns the processes: `start()` returns after both answer; `stop()`
destroys what they still run and ends each daemon by PID (the QEMUs a libvirtd
started outlive it otherwise). Needs root (qemu:///system)."""

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

LIBVIRTD = "/usr/sbin/libvirtd"
ADDRESSES = ("127.0.0.2", "127.0.0.3")
# A directory each daemon sees at this path, bound from its own DIR/share: for
# guest consoles (files and sockets) the bench reads and writes from the host.
SHARED = "/var/lib/libvirt/bench"


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listening(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def available():
    """None if two libvirtd can run here, else why not."""
    if not os.access(LIBVIRTD, os.X_OK):
        return f"{LIBVIRTD} is missing (packages libvirt-daemon libvirt-daemon-driver-qemu: scripts/setup bench)"
    if not os.path.exists("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"):
        return "libvirt's QEMU driver is missing (package libvirt-daemon-driver-qemu: scripts/setup bench)"
    if os.geteuid() != 0:
        return "two privileged libvirtd need root"
    if not shutil.which("unshare"):
        return "unshare (util-linux) is missing"
    return None


class Libvirtd:
    """One libvirtd in its own namespaces; see the module docstring."""

    def __init__(self, directory, name, address, pki):
        self.dir, self.name, self.address = directory, name, address
        self.tcp_port = free_port(address)
        self.tls_port = free_port(address)
        self.proc = None
        etc = os.path.join(directory, "etc")
        for sub in ("etc", "run.up", "run.work", "var.up", "var.work", "share"):
            os.makedirs(os.path.join(directory, sub))
        # QEMU's own TLS (`--tls`) wants its file names in one directory.
        qtls = os.path.join(directory, "qemu-tls")
        os.makedirs(qtls)
        for src, dst in (("cacert.pem", "ca-cert.pem"), ("servercert.pem", "server-cert.pem"),
                         ("serverkey.pem", "server-key.pem"), ("clientcert.pem", "client-cert.pem"),
                         ("clientkey.pem", "client-key.pem")):
            shutil.copy(os.path.join(pki, src), os.path.join(qtls, dst))
        with open(os.path.join(etc, "libvirtd.conf"), "w") as f:
            f.write(f'listen_tcp = 1\nlisten_tls = 1\nlisten_addr = "{address}"\n'
                    f'tcp_port = "{self.tcp_port}"\ntls_port = "{self.tls_port}"\n'
                    f'auth_tcp = "none"\nauth_tls = "none"\nauth_unix_rw = "none"\n'
                    f'host_uuid = "{uuid.uuid4()}"\n'
                    f'ca_file = "{pki}/cacert.pem"\ncert_file = "{pki}/servercert.pem"\n'
                    f'key_file = "{pki}/serverkey.pem"\n'
                    f'log_outputs = "3:stderr"\nkeepalive_interval = 5\n')
        with open(os.path.join(etc, "qemu.conf"), "w") as f:
            f.write('user = "root"\ngroup = "root"\ndynamic_ownership = 0\nsecurity_driver = "none"\n'
                    'cgroup_controllers = [ ]\nnamespaces = [ ]\nstdio_handler = "file"\n'
                    f'migration_address = "{address}"\nmigration_host = "{address}"\n'
                    f'migrate_tls_x509_cert_dir = "{qtls}"\n')
        # Debian's libvirtd looks its default QEMU user up before it reads
        # qemu.conf's `user = "root"`; only libvirt-daemon-system creates it.
        # The daemon's namespace gets passwd/group files that have it.
        for name, line in (("passwd", "libvirt-qemu:x:64055:64055:libvirt (bench):/var/lib/libvirt:/usr/sbin/nologin\n"),
                           ("group", "libvirt-qemu:x:64055:\n")):
            with open(f"/etc/{name}") as src, open(os.path.join(directory, name), "w") as dst:
                text = src.read()
                dst.write(text if "\nlibvirt-qemu:" in "\n" + text else text + line)
        self.log_path = os.path.join(directory, "libvirtd.log")

    @property
    def tcp_uri(self):
        return f"qemu+tcp://{self.address}:{self.tcp_port}/system"

    def tls_uri(self, pki):
        return f"qemu+tls://{self.address}:{self.tls_port}/system?pkipath={pki}"

    def host_path(self, path):
        """Where a path the daemon sees under /run or /var is on the host.
        Sockets must be under SHARED: one bound through an overlay cannot be
        reached by its upper layer's path."""
        if path.startswith(SHARED + "/"):
            return os.path.join(self.dir, "share", path[len(SHARED) + 1:])
        for top in ("/run/", "/var/"):
            if path.startswith(top):
                return os.path.join(self.dir, top.strip("/") + ".up", path[len(top):])
        raise ValueError(f"{path} is not under /run or /var")

    def start(self, spawn, timeout=60):
        """`spawn(args, log_path)` starts a process the caller reaps (a Popen)."""
        d = self.dir
        script = (
            "set -e\n"
            f"mount -t overlay overlay -o lowerdir=/run,upperdir={d}/run.up,workdir={d}/run.work /run\n"
            f"mount -t overlay overlay -o lowerdir=/var,upperdir={d}/var.up,workdir={d}/var.work /var\n"
            f"mount --bind {d}/etc /etc/libvirt\n"
            f"mount --bind {d}/passwd /etc/passwd\nmount --bind {d}/group /etc/group\n"
            "mkdir -p /run/libvirt /var/lib/libvirt/qemu /var/cache/libvirt/qemu /var/log/libvirt/qemu\n"
            f"mkdir -p {SHARED}\nmount --bind {d}/share {SHARED}\n"
            f"hostname {self.name}\n"
            # The config path names DIR: the bench's leftover sweep finds it by its command line.
            f"exec {LIBVIRTD} --listen --config {d}/etc/libvirtd.conf\n")
        self.proc = spawn(["unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", script],
                          self.log_path)
        deadline = time.monotonic() + timeout
        while not (listening(self.address, self.tcp_port) and listening(self.address, self.tls_port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"libvirtd {self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd {self.name} did not listen within {timeout}s: {self.log_tail()}")
            time.sleep(0.1)
        return self

    def vm_pid(self, name):
        """PID of the QEMU this daemon runs for domain `name` (its pid file)."""
        try:
            with open(self.host_path(f"/run/libvirt/qemu/{name}.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, n=2000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def stop(self, timeout=30):
        """Ends the daemon by PID (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def destroy_all_domains(libvirt, daemons):
    """Destroys and undefines every domain each daemon (with .proc and
    .tcp_uri) has: the QEMUs they started end with it."""
    for daemon in daemons:
        if daemon.proc is None or daemon.proc.poll() is not None:
            continue
        try:
            c = libvirt.open(daemon.tcp_uri)
        except libvirt.libvirtError:
            continue
        try:
            for dom in c.listAllDomains():
                try:
                    if dom.isActive():
                        dom.destroy()
                except libvirt.libvirtError:
                    pass
                try:
                    dom.undefine()
                except libvirt.libvirtError:
                    pass
        finally:
            c.close()


class LibvirtdPair:
    """libvirtd A (127.0.0.2) and B (127.0.0.3), as two hosts."""

    guest_dir = SHARED  # where guest consoles go: each daemon its own, same path

    def __init__(self, root, pki):
        self.pki = pki
        self.a = Libvirtd(os.path.join(root, "libvirtd-a"), "bench-host-a", ADDRESSES[0], pki)
        self.b = Libvirtd(os.path.join(root, "libvirtd-b"), "bench-host-b", ADDRESSES[1], pki)

    def start(self, spawn):
        self.a.start(spawn)
        self.b.start(spawn)
        return self

    def destroy_all(self, libvirt):
        destroy_all_domains(libvirt, (self.a, self.b))

    def stop(self, libvirt):
        self.destroy_all(libvirt)
        for daemon in (self.a, self.b):
            daemon.stop()
