"""The QEMU driver with real QEMU (TCG) and the stock virsh / python3-libvirt:
version and capabilities, XML refused by name, dumpxml round trips, a rich
device set QEMU accepts, the lifecycle of a real guest with its console and
events, a daemon restart that keeps the guest, and a QEMU that dies.

The guest here is the smallest that answers ACPI: the Debian kernel and an
initramfs of busybox-static whose init loads the power button driver, runs
acpid (power button -> poweroff), ticks on ttyS0 and echoes what it reads."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import guest  # noqa: E402

import libvirt  # noqa: E402

libvirt.registerErrorHandler(lambda ctx, err: None, None)  # errors are raised; do not also print them

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
BOOT_TIMEOUT = 180  # a TCG boot on two shared, loaded cores

INIT = r"""#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox insmod /lib/evdev.ko
/bin/busybox insmod /lib/button.ko
/bin/busybox mkdir -p /var/log /var/run
# "ready" only once acpid holds the power button's event device open: a
# shutdown sent earlier (a loaded host, right after a reboot) would be lost.
n=0; while [ $n -lt 300 ] && ! /bin/busybox ls /dev/input/event* >/dev/null 2>&1; do /bin/busybox usleep 100000; n=$((n+1)); done
/bin/busybox acpid -f -c /etc/acpi &
apid=$!
n=0; while [ $n -lt 300 ] && ! /bin/busybox ls -l /proc/$apid/fd 2>/dev/null | /bin/busybox grep -q /dev/input/event; do /bin/busybox usleep 100000; n=$((n+1)); done
echo "MINI-GUEST ready" > /dev/ttyS0
( n=0; while true; do n=$((n+1)); echo "MINI-GUEST tick $n" > /dev/ttyS0; /bin/busybox sleep 1; done ) &
while read -r line; do echo "MINI-GUEST echo $line"; done < /dev/ttyS0 > /dev/ttyS0
"""

POWER_BUTTON = """#!/bin/busybox sh
echo "MINI-GUEST powering off" > /dev/ttyS0
/bin/busybox poweroff -f
"""


def kernel():
    kernels = sorted(f for f in os.listdir("/boot") if f.startswith("vmlinuz-") and f.endswith("-amd64"))
    if not kernels:
        raise RuntimeError("no /boot/vmlinuz-*-amd64 (package linux-image-amd64, scripts/setup)")
    return os.path.join("/boot", kernels[-1])


def build_initramfs(out):
    """The mini guest's initramfs, from busybox-static and the kernel's modules."""
    release = os.path.basename(kernel())[len("vmlinuz-"):]
    root = tempfile.mkdtemp(prefix="ferry-mini-guest-")
    try:
        for d in ("bin", "dev", "proc", "sys", "lib", "etc/acpi/PWRF"):
            os.makedirs(os.path.join(root, d))
        shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
        for mod in ("drivers/input/evdev.ko", "drivers/acpi/button.ko"):
            shutil.copy(f"/lib/modules/{release}/kernel/{mod}", os.path.join(root, "lib"))
        for path, text in (("init", INIT), ("etc/acpi/PWRF/00000080", POWER_BUTTON)):
            with open(os.path.join(root, path), "w") as f:
                f.write(text)
            os.chmod(os.path.join(root, path), 0o755)
        files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True, check=True).stdout
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files.encode(),
                              capture_output=True, check=True).stdout
        with open(out, "wb") as f:
            f.write(subprocess.run(["gzip", "-1"], input=cpio, capture_output=True, check=True).stdout)
    finally:
        shutil.rmtree(root)


def guest_xml(name, initrd, serial="<serial type='pty'><target port='0'/></serial>\n"
                                  "    <console type='pty'><target type='serial' port='0'/></console>",
              domain_type="qemu", extra_devices="", on_reboot="restart"):
    return f"""<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel()}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 loglevel=3 highres=off</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_reboot>{on_reboot}</on_reboot>
  <devices>
    <emulator>{QEMU}</emulator>
    {serial}
    <memballoon model='none'/>
    {extra_devices}
  </devices>
</domain>
"""


class ConsoleReader:
    """`virsh console` as python3-libvirt does it: a stream, read on a thread."""

    def __init__(self, uri, name):
        self.conn = libvirt.open(uri)
        self.stream = self.conn.newStream(0)
        self.conn.lookupByName(name).openConsole(None, self.stream, 0)
        self.buf = b""
        self.lock = threading.Lock()
        self.ended = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while True:
                data = self.stream.recv(4096)
                if not data:
                    break
                with self.lock:
                    self.buf += data
        except libvirt.libvirtError:
            pass
        self.ended = True

    def text(self):
        with self.lock:
            return self.buf.decode(errors="replace")

    def wait_for(self, needle, timeout=BOOT_TIMEOUT, start=0):
        """Waits until needle appears after offset start; returns its offset."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            i = self.text().find(needle, start)
            if i >= 0:
                return i
            crash = guest.CRASH_RE.search(self.text())
            if crash:
                raise guest.GuestCrashed(f"the guest kernel crashed:\n{self.text()[crash.start():][:3000]}")
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not on the console within {timeout}s:\n{self.text()[-2000:]}")

    def send(self, data):
        self.stream.send(data)

    def close(self):
        try:
            self.stream.finish()
        except libvirt.libvirtError:
            pass
        self.thread.join(10)
        self.conn.close()


class QemuTestCase(ft.DaemonTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ferry-qemu-test-")
        cls.initrd = os.path.join(cls.tmp, "initramfs.gz")
        build_initramfs(cls.initrd)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def uri(self, d):
        return f"qemu+tcp://{d.host}:{d.port}/system"

    def state(self, d, name):
        return ft.virsh(self.uri(d), "domstate", "--reason", name)[1].strip()

    def wait_state(self, d, name, want, timeout=BOOT_TIMEOUT):
        ft.wait_for(lambda: self.state(d, name) == want, timeout, 0.5)
        self.assertEqual(self.state(d, name), want)

    def define(self, d, xml, name="x.xml"):
        return ft.virsh(self.uri(d), "define", ft.write_file(d.dir, name, xml), check=False)


class DriverTest(QemuTestCase):
    def test_uris_version_capabilities_nodeinfo(self):
        d = self.start_daemon()
        version = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.split()[3]
        for uri in (self.uri(d), f"qemu+unix:///system?socket={d.sock}"):
            out = ft.virsh(uri, "version")[1]
            self.assertIn(f"Running hypervisor: QEMU {version}", out)
        caps = ET.fromstring(ft.virsh(self.uri(d), "capabilities")[1])
        arch = caps.find("guest/arch")
        self.assertEqual(arch.get("name"), "x86_64")
        self.assertEqual(arch.find("emulator").text, QEMU)
        self.assertIn("pc-i440fx-7.2", [m.text for m in arch.findall("machine")])
        types = [dom.get("type") for dom in arch.findall("domain")]
        self.assertIn("qemu", types)
        with open("/proc/cpuinfo") as f:
            hw_virt = any(w in ("vmx", "svm") for l in f if l.startswith("flags") for w in l.split())
        self.assertEqual("kvm" in types, hw_virt and os.access("/dev/kvm", os.R_OK | os.W_OK))
        self.assertRegex(ft.virsh(self.uri(d), "nodeinfo")[1], rf"CPU\(s\):\s+{os.cpu_count()}\n")
        # The sim driver is still there.
        self.assertIn("Running hypervisor: SIM", ft.virsh(d.tcp_uri, "version")[1])

    def test_kvm_is_refused_where_kvm_cannot_boot_a_guest(self):
        d = self.start_daemon()
        types = [x.get("type") for x in
                 ET.fromstring(ft.virsh(self.uri(d), "capabilities")[1]).findall("guest/arch/domain")]
        rc, _, err = self.define(d, guest_xml("k", self.initrd, domain_type="kvm"))
        if "kvm" in types:
            self.assertEqual(rc, 0, err)
        else:
            self.assertNotEqual(rc, 0)
            self.assertIn("domain type 'kvm' cannot run on this host", err)
            self.assertIn("type='qemu'", err)
            self.assertNotIn("k", ft.domain_names(d, "--all"))

    def test_unsupported_xml_is_refused_naming_it(self):
        d = self.start_daemon()
        base = guest_xml("r", self.initrd)
        cases = [
            (base.replace("<devices>", "<devices><hostdev mode='subsystem' type='pci'/>"), "<hostdev>"),
            (base.replace("<os>", "<os firmware='efi'>"), "attribute 'firmware' of <os>"),
            (base.replace("<vcpu>1</vcpu>", "<vcpu cpuset='0'>1</vcpu>"), "'cpuset' of <vcpu>"),
            (base.replace("<devices>", "<devices><disk type='network' device='disk'>"
                                       "<source protocol='nbd' name='x'/><target dev='vda'/></disk>"),
             "attribute 'protocol' of <devices/disk/source>"),
            (base.replace("<devices>", "<devices><disk type='volume' device='disk'>"
                                       "<target dev='vda'/></disk>"),
             "type='volume' of <disk>"),
            (base.replace("<devices>", "<devices><graphics type='spice'/>"), "type='spice' of <graphics>"),
            (base.replace("<devices>", "<devices><graphics type='vnc' port='5900'/>"),
             "attribute 'port' of <devices/graphics>"),
            (base.replace("<devices>", "<devices><interface type='network'><source network='default'/>"
                                       "</interface>"), "attribute 'network' of <devices/interface/source>"),
            (base.replace("<devices>", "<devices><interface type='network'/>"), "type='network' of <interface>"),
            (base.replace("<devices>", "<devices><disk type='file' device='cdrom'><target dev='vdb'/></disk>"),
             "<disk device='cdrom'> on bus 'virtio'"),
            (base.replace("<devices>", "<devices><disk type='file'><source file='/x'/><target dev='hde'/></disk>"),
             "bus 'ide' has 4 units"),
            (base.replace("<on_reboot>restart</on_reboot>", "<on_poweroff>preserve</on_poweroff>"),
             "<on_poweroff>preserve</on_poweroff>"),
            (base.replace("<features>", "<features><hyperv mode='custom'/>"), "<hyperv>"),
            (base.replace("<domain type='qemu'>", "<domain type='sim'>"), "domain type 'sim'"),
            (base.replace("<devices>", "<devices><disk type='file'><driver name='qemu' type='vmdk'/>"
                                       "<source file='/x'/><target dev='vda'/></disk>"),
             "type='vmdk' of <disk/driver>"),
            # What virt-install writes, beyond the values the driver runs:
            (base.replace("<features>", "<clock offset='utc'><timer name='rtc' tickpolicy='merge'/>"
                                        "</clock><features>"), "<timer name='rtc' tickpolicy='merge'>"),
            (base.replace("<features>", "<clock offset='utc'><timer name='pit' present='no'/>"
                                        "</clock><features>"), "<timer name='pit' present='no'>"),
            (base.replace("<features>", "<clock offset='utc'><timer name='tsc'/></clock><features>"),
             "name='tsc' of <clock/timer>"),
            (base.replace("<devices>", "<devices><controller type='pci' model='pcie-root'/>"),
             "<controller type='pci' model='pcie-root'> on machine 'pc'"),
            (base.replace("<devices>", "<devices><controller type='pci' model='pcie-root-port'/>"),
             "<controller type='pci' model='pcie-root-port'> on machine 'pc'"),
            (base.replace("<devices>", "<devices><controller type='pci' model='pci-bridge'/>"),
             "model='pci-bridge' of <controller type='pci'>"),
            (base.replace("<devices>", "<devices><controller type='scsi' model='virtio-scsi'/>"),
             "type='scsi' of <controller>"),
            (base.replace("machine='pc'", "machine='q35'").replace(
                "<devices>", "<devices>" + "<controller type='pci' model='pcie-root-port'/>" * 17),
             "more than 16 <controller type='pci' model='pcie-root-port'>"),
            (base.replace("machine='pc'", "machine='q35'").replace(
                "<devices>", "<devices><controller type='pci' model='pcie-root' index='1'/>"),
             "<controller type='pci' model='pcie-root' index='1'>: the root bus is index 0"),
            (base.replace("<devices>", "<devices>" + "".join(
                f"<channel type='unix'><target type='virtio' name='c{i}'/></channel>"
                for i in range(9))),
             "more than 8 <channel>s without <source path=...>"),
            (base.replace("<devices>", "<devices><controller type='usb' model='ich9-ehci1'/>"),
             "model='ich9-ehci1' of <controller>"),
            (base.replace("<devices>", "<devices><graphics type='vnc'><listen type='address'/>"
                                       "</graphics>"), "type='address' of <graphics/listen>"),
            (base.replace("<devices>", "<devices><disk type='file'><driver name='qemu' io='native'/>"
                                       "<source file='/x'/><target dev='vda'/></disk>"),
             "io='native'> needs cache='none'"),
            (base.replace("<devices>", "<devices><controller type='usb' model='none'/>"
                                       "<input type='tablet' bus='usb'/>"),
             "<input bus='usb'> with <controller type='usb' model='none'>"),
        ]
        for xml, named in cases:
            with self.subTest(named=named):
                rc, _, err = self.define(d, xml)
                self.assertNotEqual(rc, 0)
                self.assertIn("unsupported configuration", err)
                self.assertIn(named, err)
                self.assertEqual(ft.domain_names(d, "--all"), [])  # sim's list, and ...
                self.assertNotIn("r", ft.virsh(self.uri(d), "list", "--all", "--name")[1].split())

    def test_rich_xml_round_trips_and_qemu_runs_it_without_network_listeners(self):
        d = self.start_daemon()
        disks = os.path.join(d.dir, "disks")
        os.makedirs(disks)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{disks}/a.qcow2", "16M"], check=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", f"{disks}/b.img", "8M"], check=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", f"{disks}/c.img", "8M"], check=True)
        devices = f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='writeback'/>
      <source file='{disks}/a.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='{disks}/b.img'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disks}/c.img'/>
      <target dev='sdb' bus='scsi'/>
      <readonly/>
      <shareable/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='hdc' bus='ide'/>
    </disk>
    <interface type='user'>
      <mac address='52:54:00:12:34:56'/>
      <model type='virtio'/>
    </interface>
    <interface type='user'>
      <model type='e1000'/>
    </interface>
    <serial type='file'>
      <source path='{d.dir}/serial1.log'/>
      <target port='1'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='{d.dir}/serial2.sock'/>
      <target port='2'/>
    </serial>
    <channel type='unix'>
      <source mode='bind' path='{d.dir}/agent.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <graphics type='vnc'/>
    <video><model type='vga'/></video>
    <input type='tablet' bus='usb'/>
    <input type='keyboard' bus='virtio'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"""
        xml = guest_xml("rich", self.initrd, extra_devices=devices).replace(
            "<memballoon model='none'/>", "<memballoon model='virtio'/>").replace(
            "<memory unit='MiB'>128</memory>",
            "<title>A rich guest</title>\n  <description>every device</description>\n"
            "  <memory unit='MiB'>128</memory>\n  <currentMemory unit='MiB'>96</currentMemory>").replace(
            "<vcpu>1</vcpu>", "<vcpu current='1'>2</vcpu>").replace(
            "</features>", "</features>\n  <clock offset='utc'/>")
        rc, _, err = self.define(d, xml)
        self.assertEqual(rc, 0, err)
        first = ft.virsh(self.uri(d), "dumpxml", "rich")[1]
        rc, _, err = self.define(d, first, "again.xml")
        self.assertEqual(rc, 0, err)
        self.assertEqual(ft.virsh(self.uri(d), "dumpxml", "rich")[1], first)
        for needle in ("<title>A rich guest</title>", "cache='writeback'", "<shareable/>", "bus='scsi'",
                       "type='e1000'", "<graphics type='vnc'/>", "name='org.qemu.guest_agent.0'",
                       "<currentMemory unit='KiB'>98304</currentMemory>", "<vcpu placement='static' current='1'>2</vcpu>"):
            self.assertIn(needle, first)

        ft.virsh(self.uri(d), "start", "rich")
        self.assertEqual(self.state(d, "rich"), "running (booted)")
        pid, qmp = ft.vmm_of(d, "rich", "qemu")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode().split("\0")
        cmd = " ".join(argv)
        for needle in ("-accel tcg", "virtio-blk-pci", "ahci", "virtio-scsi-pci", "scsi-hd", "ide-cd",
                       "share-rw=on", "cache=writeback", "readonly=on", "-netdev user", "e1000",
                       "mac=52:54:00:12:34:56", "usb-tablet", "virtio-keyboard-pci", "virtio-rng-pci",
                       "virtio-balloon-pci", "virtserialport", "-vnc unix:", "-device VGA",
                       "bootindex=1", "-smp 1,maxcpus=2"):
            self.assertIn(needle, cmd)
        # QEMU listens on no network socket: only UNIX sockets ferryd or the XML named.
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    self.assertNotIn(line.split()[9], inodes, f"QEMU has a {table} socket: {line}")
        self.assertTrue(os.path.exists(f"{d.dir}/serial2.sock"))
        self.assertTrue(any(f.endswith(".vnc") for f in os.listdir(os.path.join(d.dir, "run", "qemu"))))
        info = ft.virsh(self.uri(d), "dominfo", "rich")[1]
        self.assertRegex(info, r"Used memory:\s+98304 KiB")
        ft.virsh(self.uri(d), "destroy", "rich")
        self.assertEqual(self.state(d, "rich"), "shut off (destroyed)")
        self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(pid), 10))
        self.assertFalse(any(f.endswith(".vnc") for f in os.listdir(os.path.join(d.dir, "run", "qemu"))))
        ft.virsh(self.uri(d), "undefine", "rich")

    def test_qemu_that_dies_is_reported_crashed_with_the_reason_from_its_log(self):
        d = self.start_daemon()
        self.assertEqual(self.define(d, guest_xml("c1", self.initrd))[0], 0)
        ft.virsh(self.uri(d), "start", "c1")
        pid, _ = ft.vmm_of(d, "c1", "qemu")
        os.kill(pid, signal.SIGTERM)
        self.wait_state(d, "c1", "shut off (crashed)", 30)
        self.assertRegex(d.log(), r"domain 'c1' crashed: QEMU \(pid \d+\) ended unexpectedly .*"
                                  r"terminating on signal 15")
        # QEMU's log, by domain in the log dir: the command line, QEMU's last
        # words, then why the instance ended.
        with open(os.path.join(d.dir, "log", "qemu", "c1.log")) as f:
            qlog = f.read()
        self.assertRegex(qlog, r"(?s)starting up\n\S*qemu-system-x86_64 .*terminating on signal 15.*\n"
                               r"\S+ \S+\+0000: shutting down, reason=crashed\n$")
        # A QEMU that cannot start at all: its own words come back to virsh.
        ft.virsh(self.uri(d), "undefine", "c1")
        bad = guest_xml("c2", self.initrd).replace(kernel(), os.path.join(d.dir, "no-such-kernel"))
        self.assertEqual(self.define(d, bad)[0], 0)
        rc, _, err = ft.virsh(self.uri(d), "start", "c2", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("QEMU for domain 'c2' failed to start", err)
        self.assertIn("no-such-kernel", err)
        self.assertEqual(self.state(d, "c2"), "shut off (failed)")


class EventLoop:
    """`virsh event --loop --all`: the lifecycle events of one domain, in order."""

    def __init__(self, uri):
        env = dict(os.environ)
        env.pop("LIBVIRT_DEFAULT_URI", None)
        self.proc = subprocess.Popen(["virsh", "-c", uri, "event", "--loop", "--all", "--timeout", "900"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(1.5)  # let it register its callbacks

    def stop(self, name):
        time.sleep(1)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        lines = [l.split(": ", 1)[1] for l in out.splitlines() if f"event 'lifecycle' for domain '{name}'" in l]
        return lines, out + err


class GuestLifecycleTest(QemuTestCase):
    def end_attempt(self):
        """Ends what a run crashed by its guest started (for the retry)."""
        try:
            self.tearDown()
        finally:
            self.daemons = []

    @guest.retry_on_guest_crash("end_attempt")
    def test_lifecycle_console_events_restart_and_acpi_shutdown(self):
        d = self.start_daemon()
        uri = self.uri(d)
        ev = EventLoop(uri)
        console = None
        try:
            self.assertEqual(self.define(d, guest_xml("g1", self.initrd))[0], 0)
            ft.virsh(uri, "autostart", "g1")
            self.assertRegex(ft.virsh(uri, "dominfo", "g1")[1], r"Autostart:\s+enable")
            ft.virsh(uri, "autostart", "--disable", "g1")
            ft.virsh(uri, "start", "g1")
            self.assertEqual(self.state(d, "g1"), "running (booted)")
            console = ConsoleReader(uri, "g1")
            console.wait_for("MINI-GUEST ready")
            console.send(b"hello ferry\n")
            console.wait_for("MINI-GUEST echo hello ferry", 60)
            # A second console is refused, unless forced: then it takes over.
            second = ConsoleReader.__new__(ConsoleReader)
            conn = libvirt.open(uri)
            with self.assertRaisesRegex(libvirt.libvirtError, "Active console session exists"):
                conn.lookupByName("g1").openConsole(None, conn.newStream(0), 0)
            conn.close()
            del second

            ft.virsh(uri, "suspend", "g1")
            self.assertEqual(self.state(d, "g1"), "paused (user)")
            mark = len(console.text())
            time.sleep(3)
            self.assertNotIn("tick", console.text()[mark:])  # a paused guest prints nothing
            ft.virsh(uri, "resume", "g1")
            self.assertEqual(self.state(d, "g1"), "running (unpaused)")
            console.wait_for("MINI-GUEST tick", 60, start=mark)
        finally:
            if console:
                console.close()
                console = None
            lines, text = ev.stop("g1")
        self.assertEqual(lines, ["Defined Added", "Started Booted", "Suspended Paused", "Resumed Unpaused"],
                         text)

        # A daemon restart keeps the guest and its monitor.
        pid, _ = ft.vmm_of(d, "g1", "qemu")
        self.assertEqual(d.stop(), 0)
        self.assertTrue(ft.pid_alive(pid))
        d.start()
        self.assertEqual(self.state(d, "g1"), "running (unpaused)")
        self.assertEqual(ft.vmm_of(d, "g1", "qemu")[0], pid)
        self.assertIn("reattached to QEMU pid", d.log())
        ev = EventLoop(uri)
        try:
            console = ConsoleReader(uri, "g1")
            console.send(b"after restart\n")
            console.wait_for("MINI-GUEST echo after restart", 60)
            forced = libvirt.open(uri)
            stream = forced.newStream(0)
            forced.lookupByName("g1").openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            self.assertTrue(ft.wait_for(lambda: console.ended, 30))  # the first one was ended
            stream.abort()
            forced.close()
            console.close()
            console = ConsoleReader(uri, "g1")

            mark = len(console.text())
            ft.virsh(uri, "reboot", "g1")
            console.wait_for("MINI-GUEST ready", start=mark)
            self.assertEqual(ft.vmm_of(d, "g1", "qemu")[0], pid)  # the same QEMU, reset

            ft.virsh(uri, "shutdown", "g1")
            console.wait_for("MINI-GUEST powering off", 60, start=mark)
            self.wait_state(d, "g1", "shut off (shutdown)", 60)
            self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(pid), 10))
            ft.virsh(uri, "undefine", "g1")
        finally:
            if console:
                console.close()
            lines, text = ev.stop("g1")
        self.assertEqual(lines, ["Shutdown Finished", "Stopped Shutdown", "Undefined Removed"], text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
