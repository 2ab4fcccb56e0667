"""The project's test guest (tests/guest/), for tests and the benchmark.

`tests/guest/build-guest` (run by meson into BUILD/tests/guest/) makes a
distribution kernel and an initramfs whose PID 1 is `ferry-workload`: it fills
`fill` bytes of RAM with a pattern it can regenerate, rewrites one word in each
page of a `wss`-byte working set every `dirty_ms` ms, and every `verify_s`
seconds (0: only on request) checks every byte of it. It reports on its serial
console (ttyS0) in lines starting with "FERRY-GUEST " (see ferry-workload.c).

What is here:

* paths: `GUEST_DIR`, `KERNEL`, `INITRD`, `QEMU`; `require()` fails clearly
  when the guest was not built;
* `kernel_cmdline(...)`: the kernel command line with the workload's parameters;
* `domain_xml(...)`: libvirt domain XML for it (`type='qemu'`, TCG, machine
  pc-i440fx-7.2, cpu custom qemu64, direct kernel boot, a file `<serial>`
  console, or a UNIX socket one that also takes commands, no balloon);
* `qemu_args(...)`: the same guest as a plain QEMU command line (QMP on a
  UNIX socket, `-incoming defer` for a destination);
* `Console(path)`: reads a console log as it grows: `wait_ready()`,
  `wait_verified()` (a verification pass that began in *this* log, i.e. after a
  migration when the log is the destination's, and its counter),
  `wait_fail()`, `last_counter()`, `results()`. Every wait raises
  `GuestCrashed` if the guest kernel crashed (a TCG guest oopses rarely, see
  QEMU.md) and `VerifyFailed` if a pass found a wrong byte, so a test can tell
  the two apart; `GuestError` for a workload that refused its parameters;
* `request_verification(console, send)`: a pass on request, and its result;
* `retry_on_guest_crash("cleanup_method")`: a test decorator that runs the
  scenario again when the guest kernel crashed (never on a FAIL);
* `ConsoleSocket(path)`: writes commands to a socket console
  (`verify`, `corrupt [PAGE]`, `status`, `crash`);
* `Qmp(path)` (ferrytest's): a small QMP client that keeps the events it
  reads (`wait_event`);
* `QemuGuest`: one QEMU process running the guest, its QMP and console, ended
  by PID.

Typical use against a driver (a ferryd or a libvirtd):

    log = os.path.join(tmp, "console.log")
    xml = guest.domain_xml("g1", memory_mib=256, console_log=log,
                           cmdline=guest.kernel_cmdline(fill="128M", wss="16M"))
    ... define + start, then:
    con = guest.Console(log)
    con.wait_ready(60)
    before = con.last_counter()
    ... migrate; the destination's console log is another file:
    after = guest.Console(dst_log).wait_verified(60)   # raises on FAIL/crash
    assert after["counter"] > before
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid as uuidlib
from xml.sax.saxutils import escape, quoteattr

from ferrytest import Qmp  # noqa: F401  (re-exported: a QMP client with events)

BUILD = os.environ.get("FERRY_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build-asan"))
GUEST_DIR = os.path.join(BUILD, "tests/guest")
KERNEL = os.path.join(GUEST_DIR, "vmlinuz")
INITRD = os.path.join(GUEST_DIR, "initramfs.gz")
QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
MACHINE = "pc-i440fx-7.2"
CPU_MODEL = "qemu64"

# Small enough for make check on two shared cores; the benchmark's guest is
# memory_mib=1024, fill="768M" (QEMU.md).
DEFAULT_MEMORY_MIB = 256
DEFAULT_FILL = "128M"

# QEMU before 9.0 loses a TCG guest's writes during migration: when the
# source syncs the dirty bitmap of a RAM block whose size is a multiple of
# 256 KiB (64 pages, one bitmap word), it clears the dirty bits word by word
# without resetting TCG's TLB, so a store through a TLB entry that was
# already writable marks nothing, and a page sent before that store arrives
# stale (QEMU commit 03bfc2188f, "physmem: Fix migration dirty bitmap
# coherency with TCG memory access", in 9.0; Debian 12 has 7.2 without it).
# The pages lost are the guest kernel's hottest (a timer on a stack, the
# per-CPU timer queue): the "TCG oops" after a move, a jump to 0 from
# __hrtimer_run_queues, which post-copy after a first pass hit every time
# (docs/qemu.md, "Post-copy and QEMU 7.2's TCG"). Memory of 8 KiB more than
# a multiple of 256 KiB takes QEMU's other path, which resets the TLB.
MEMORY_PAD_KIB = 8


def memory_kib(memory_mib):
    """The guest's memory in KiB: memory_mib MiB plus MEMORY_PAD_KIB (above)."""
    return memory_mib * 1024 + MEMORY_PAD_KIB


def require():
    """Raises RuntimeError naming what is missing (a skip would count as a failure)."""
    for path, what in ((KERNEL, "the guest kernel"), (INITRD, "the guest initramfs")):
        if not os.path.isfile(path):
            raise RuntimeError(f"{what} {path} is missing: build first (ninja -C {BUILD} builds tests/guest)")
    if not os.access(QEMU, os.X_OK):
        raise RuntimeError(f"{QEMU} is missing (package qemu-system-x86, scripts/setup)")


def kernel_cmdline(fill=DEFAULT_FILL, wss="16M", dirty_ms=100, verify_s=2, seed=1, corrupt_at=0, extra=""):
    """Kernel command line. Kernel messages at warning level and above reach the
    console (an oops does); an oops panics and the guest then stays halted, so
    its log keeps the reason. No lockup watchdog: a TCG guest on a starved host
    would warn about its own slowness. `tsc=reliable`: on a loaded host the
    guest's TSC drifts against its other clocks, and the clocksource watchdog
    would mark it unstable and make the kernel patch its own code while
    running. `highres=off`: the TCG oops (QEMU.md) was always a jump to address
    0 in __hrtimer_run_queues; the QEMU driver's migration scenarios crashed
    3 runs of 6 with high resolution timers (tsc=reliable alone did not
    help), about 1 in 9 without them, and ran about 3x faster."""
    args = (f"console=ttyS0 loglevel=5 oops=panic panic=0 nowatchdog tsc=reliable highres=off "
            f"ferry.fill={fill} ferry.wss={wss} "
            f"ferry.dirty_ms={dirty_ms} ferry.verify_s={verify_s} ferry.seed={seed}")
    if corrupt_at:
        args += f" ferry.corrupt_at={corrupt_at}"
    return args + (" " + extra if extra else "")


def domain_xml(name, memory_mib=DEFAULT_MEMORY_MIB, console_log=None, console_socket=None,
               cmdline=None, uuid=None, vcpus=1, domain_type="qemu", emulator=QEMU,
               kernel=None, initrd=None, extra_devices=""):
    """libvirt domain XML for the test guest (QEMU.md: what libvirt 9.0 accepts
    for it). The console is a file (`console_log`, output only) or, with
    `console_socket`, a UNIX socket QEMU listens on that also takes commands,
    its output also logged to `console_log`. `extra_devices`: more XML inside
    <devices> (a disk: `disk_xml()`)."""
    if console_socket:
        log = f"\n      <log file={quoteattr(console_log)} append='off'/>" if console_log else ""
        serial = (f"    <serial type='unix'>\n      <source mode='bind' path={quoteattr(console_socket)}/>"
                  f"{log}\n      <target port='0'/>\n    </serial>\n")
    elif console_log:
        serial = (f"    <serial type='file'>\n      <source path={quoteattr(console_log)}/>\n"
                  f"      <target port='0'/>\n    </serial>\n")
    else:
        raise ValueError("domain_xml needs console_log or console_socket")
    return (
        f"<domain type={quoteattr(domain_type)}>\n"
        f"  <name>{escape(name)}</name>\n"
        f"  <uuid>{uuid or uuidlib.uuid4()}</uuid>\n"
        f"  <memory unit='KiB'>{memory_kib(memory_mib)}</memory>\n"
        f"  <vcpu>{vcpus}</vcpu>\n"
        f"  <os>\n"
        f"    <type arch='x86_64' machine='{MACHINE}'>hvm</type>\n"
        f"    <kernel>{escape(kernel or KERNEL)}</kernel>\n"
        f"    <initrd>{escape(initrd or INITRD)}</initrd>\n"
        f"    <cmdline>{escape(cmdline or kernel_cmdline())}</cmdline>\n"
        f"  </os>\n"
        f"  <features><acpi/><apic/></features>\n"
        f"  <cpu mode='custom' match='exact'><model fallback='allow'>{CPU_MODEL}</model></cpu>\n"
        f"  <on_poweroff>destroy</on_poweroff>\n"
        f"  <on_reboot>restart</on_reboot>\n"
        f"  <on_crash>destroy</on_crash>\n"
        f"  <devices>\n"
        f"    <emulator>{escape(emulator)}</emulator>\n"
        f"{serial}"
        f"{extra_devices}"
        f"    <memballoon model='none'/>\n"
        f"  </devices>\n"
        f"</domain>\n")


def disk_xml(path, fmt="raw", target="vda"):
    """A virtio disk for domain_xml(extra_devices=...): the guest writes it with
    kernel_cmdline(extra="ferry.disk_kib=N") (its first disk, /dev/vda)."""
    return (f"    <disk type='file' device='disk'>\n"
            f"      <driver name='qemu' type={quoteattr(fmt)}/>\n"
            f"      <source file={quoteattr(path)}/>\n"
            f"      <target dev={quoteattr(target)} bus='virtio'/>\n"
            f"    </disk>\n")


def disk_digest(path, blocks, seed=1):
    """What the workload's `disk verify` reports as digest, computed from a raw
    image of its disk (the first `blocks` 4 KiB blocks): raises ValueError
    naming a block that is not one the workload wrote."""
    mask = (1 << 64) - 1

    def splitmix(x):
        x = (x + 0x9e3779b97f4a7c15) & mask
        x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & mask
        x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & mask
        return x ^ (x >> 31)

    h = 0x6665727279646b31
    with open(path, "rb") as f:
        for b in range(blocks):
            data = f.read(4096)
            tag, gen = struct.unpack_from("<QQ", data) if len(data) == 4096 else (None, None)
            if tag != (seed << 32 | b) or data != data[:16] * 256:
                raise ValueError(f"block {b} of {path} is not one the guest wrote")
            h = splitmix(h ^ splitmix(((b << 32) ^ gen) & mask))
    return h


def qemu_args(console_log, qmp_socket, memory_mib=DEFAULT_MEMORY_MIB, cmdline=None,
              console_socket=None, incoming=False, vcpus=1, kernel=None, initrd=None):
    """The guest as a plain QEMU command line (TCG: KVM does not boot here).
    The console goes to `console_log`; with `console_socket` QEMU also listens
    there for commands. `incoming=True` makes a destination (`-incoming defer`,
    then QMP `migrate-incoming`)."""
    if console_socket:
        serial = ["-chardev", f"socket,id=ser0,path={console_socket},server=on,wait=off,"
                              f"logfile={console_log}", "-serial", "chardev:ser0"]
    else:
        serial = ["-serial", f"file:{console_log}"]
    args = [QEMU, "-machine", MACHINE, "-accel", "tcg", "-cpu", CPU_MODEL, "-m", f"size={memory_kib(memory_mib)}k",
            "-smp", str(vcpus), "-nodefaults", "-display", "none", "-no-user-config", *serial,
            "-kernel", kernel or KERNEL, "-initrd", initrd or INITRD, "-append", cmdline or kernel_cmdline(),
            "-qmp", f"unix:{qmp_socket},server=on,wait=off"]
    if incoming:
        args += ["-incoming", "defer"]
    return args


# A TCG guest's kernel oopses now and then after a migration, whatever carries
# the stream (QEMU.md: 2 in 120 on a quiet host; 1 in 4 seen here with a load
# average of 15-28). Such a run proves nothing either way.
CRASH_ATTEMPTS = 5


def retry_on_guest_crash(cleanup):
    """Decorates a test method: when the guest kernel crashed (GuestCrashed),
    the test's method `cleanup` ends what the attempt started and the scenario
    runs again, up to CRASH_ATTEMPTS in all; a FAIL, a timeout or anything else
    fails the test at once."""
    def wrap(test):
        def run(self):
            for attempt in range(1, CRASH_ATTEMPTS + 1):
                try:
                    return test(self)
                except GuestCrashed as e:
                    print(f"\n{self.id()}: attempt {attempt}: the guest kernel crashed:\n{e}", file=sys.stderr)
                    getattr(self, cleanup)()
                    if attempt == CRASH_ATTEMPTS:
                        raise
        run.__name__ = test.__name__
        run.__doc__ = test.__doc__
        return run
    return wrap


# ---- the console ----

class GuestCrashed(AssertionError):
    """The guest kernel crashed (oops, panic): not a verification result."""


class VerifyFailed(AssertionError):
    """A verification pass found memory that is not what the guest wrote."""


class GuestError(RuntimeError):
    """The workload reported an error (a bad parameter, no memory)."""


LINE_RE = re.compile(r"FERRY-GUEST (\w+)(?: (begin|ok|FAIL|ready|stopped))?((?: \w+=\S+)*)")
# What a crashing 6.1 kernel prints first (at loglevel 5 these reach the
# console). Only crashes: warnings with a backtrace (an RCU stall, a soft
# lockup on a starved host) leave the guest running, and a guest that stops
# answering is caught by the wait's timeout. An oops may be cut short before
# its "Kernel panic" line, so its first line counts.
CRASH_RE = re.compile(r"Kernel panic|Oops: |BUG: unable to handle|BUG: kernel NULL pointer|kernel BUG at|"
                      r"general protection fault|double fault|sysrq: Trigger a crash")


# A kernel message ("[   12.345678] text" up to its newline) that does not
# start a line: printed into the middle of one of the workload's lines.
KERNEL_MSG_MID_LINE_RE = re.compile(r"(?<=[^\n])\[\s*\d+\.\d+\] [^\n]*\n")


# Values the workload prints in hex (`disk ok ... digest=`, `disk FAIL ...
# got_tag=`, `verify FAIL ... expected= got=`): strings always, also the 1 in
# ~1,900 whose 16 digits are all 0-9 (a test read such a digest as an int).
HEX_KEYS = frozenset({"digest", "got_tag", "expected", "got"})


def parse_line(line):
    """A FERRY-GUEST line as a dict: {"kind": "ready"|"verify begin"|"verify ok"|
    "verify FAIL"|"corrupt"|"status"|"error", key: value...}; numbers are ints
    (but HEX_KEYS). None for other lines."""
    m = LINE_RE.search(line)
    if not m:
        return None
    kind = m.group(1) + (" " + m.group(2) if m.group(2) else "")
    d = {"kind": kind, "line": line[m.start():]}
    if kind == "error":
        d["text"] = line[m.start() + len("FERRY-GUEST error "):]
        return d
    for kv in m.group(3).split():
        k, v = kv.split("=", 1)
        if k in d:  # never let a damaged line override the kind or the line
            continue
        d[k] = int(v) if k not in HEX_KEYS and re.fullmatch(r"\d+", v) else v
    return d


class Console:
    """A guest's console log (a file QEMU writes), read as it grows."""

    def __init__(self, path):
        self.path = path

    def text(self):
        try:
            with open(self.path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def lines(self):
        """The log's lines as written, kernel messages included."""
        return [line.rstrip("\r") for line in self.text().split("\n")]

    def events(self):
        """The FERRY-GUEST lines, parsed (parse_line), with any kernel message
        the serial console printed into the middle of one taken out: the
        kernel writes its messages between two FIFO loads of a line the
        workload wrote (a starved TCG guest warns about lost RTC interrupts)."""
        text = KERNEL_MSG_MID_LINE_RE.sub("", self.text())
        # Only whole lines: QEMU may have written part of the last one (a
        # `verify begin` without its `pass=` yet) when the log is read.
        whole = text.split("\n")[:-1]
        return [e for e in map(parse_line, (line.rstrip("\r") for line in whole)) if e]

    def crash(self):
        """The console from the first crash line on, or None."""
        lines = self.lines()
        for i, line in enumerate(lines):
            if CRASH_RE.search(line) and not line.lstrip().startswith("FERRY-GUEST"):
                return "\n".join(lines[max(0, i - 2):i + 30])
        return None

    def check(self):
        """Raises GuestCrashed or GuestError if the log shows either."""
        crash = self.crash()
        if crash:
            raise GuestCrashed(f"the guest kernel crashed ({self.path}):\n{crash}")
        for e in self.events():
            if e["kind"] == "error":
                raise GuestError(f"the guest workload reports: {e['text']} ({self.path})")

    def tail(self, n=15):
        return "\n".join(self.lines()[-n:])

    def wait_for(self, pred, timeout, what, alive=None):
        """Polls until pred(events) returns something true, and returns it.
        Raises GuestCrashed/GuestError as soon as the log shows them, and
        TimeoutError (with the log's tail) after `timeout` s. `alive()`, if
        given, returning False (QEMU exited) ends the wait early."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            r = pred(self.events())
            if r:
                return r
            if alive is not None and not alive():
                self.check()
                raise RuntimeError(f"QEMU exited while waiting for {what}; console:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} on {self.path} within {timeout:g}s; console:\n{self.tail()}")
            time.sleep(0.1)

    def wait_ready(self, timeout=120, alive=None):
        """The workload's `ready` line (the pattern is in RAM)."""
        return self.wait_for(lambda ev: next((e for e in ev if e["kind"] == "ready"), None),
                             timeout, "FERRY-GUEST ready", alive)

    def results(self):
        """Completed verification passes in order (`verify ok` / `verify FAIL`),
        each with `began_here`: its `begin` line is in this log too."""
        begun, out = set(), []
        for e in self.events():
            if e["kind"] == "verify begin":
                begun.add(e["pass"])
            elif e["kind"] in ("verify ok", "verify FAIL"):
                out.append(dict(e, began_here=e["pass"] in begun))
        return out

    def wait_verified(self, timeout=120, alive=None, after_pass=0):
        """The first pass numbered above `after_pass` that began *and* ended in
        this log, i.e. checked every page after this console started (for a
        migration destination: after the move). Returns it (`counter`, `pages`,
        `pass`); raises VerifyFailed if it, or any pass seen meanwhile, failed."""
        def pred(ev):
            for r in self.results():
                if r["kind"] == "verify FAIL":
                    raise VerifyFailed(f"the guest found wrong memory: {r['line']} ({self.path})")
                if r["began_here"] and r["pass"] > after_pass:
                    return r
            return None
        return self.wait_for(pred, timeout, "complete verification pass", alive)

    def wait_fail(self, timeout=120, alive=None):
        """The first `verify FAIL` line (for tests that corrupt on purpose)."""
        return self.wait_for(lambda ev: next((r for r in self.results() if r["kind"] == "verify FAIL"), None),
                             timeout, "FERRY-GUEST verify FAIL", alive)

    def last_counter(self):
        """The highest counter the log shows (every FERRY-GUEST line but errors
        carries one), or None."""
        values = [e["counter"] for e in self.events() if isinstance(e.get("counter"), int)]
        return max(values) if values else None


def request_verification(console, send, timeout=180, alive=None):
    """Sends `verify` with `send` (a ConsoleSocket's or a QemuGuest's) and
    returns the pass it started, as wait_verified() does (raises VerifyFailed,
    GuestCrashed)."""
    done = [r["pass"] for r in console.results()]
    send("verify")
    return console.wait_verified(timeout, alive, after_pass=max(done, default=0))


def disk_command(console, send, command, timeout=120, alive=None):
    """Sends `disk verify` or `disk stop` and returns the guest's answer that
    came after it (`disk ok` with its digest, `disk stopped`); raises
    VerifyFailed on `disk FAIL`."""
    seen = len([e for e in console.events() if e["kind"].startswith("disk")])
    send(command)

    def pred(ev):
        answers = [e for e in ev if e["kind"].startswith("disk")][seen:]
        for e in answers:
            if e["kind"] == "disk FAIL":
                raise VerifyFailed(f"the guest found a wrong disk block: {e['line']} ({console.path})")
            if e["kind"] in ("disk ok", "disk stopped"):
                return e
        return None
    return console.wait_for(pred, timeout, f"the answer to '{command}'", alive)


class ConsoleSocket:
    """Commands to a guest whose console is a UNIX socket QEMU listens on."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX)
            try:
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def send(self, command):
        self.sock.sendall(command.encode() + b"\n")

    def close(self):
        self.sock.close()


# ---- the guest in a plain QEMU (no daemon) ----

MIGRATION_END = ("completed", "failed", "cancelled")


class QemuGuest:
    """One QEMU running the test guest, started by start() and ended by PID in
    stop(). Its files live in `directory`: NAME.qmp, NAME.console.log (read by
    .console), NAME.console.sock (with console_input=True: .send(command)),
    NAME.qemu.log (QEMU's own stderr)."""

    def __init__(self, directory, name, memory_mib=DEFAULT_MEMORY_MIB, cmdline=None, incoming=False,
                 console_input=False, kernel=None, initrd=None):
        base = os.path.join(directory, name)
        self.name = name
        self.qmp_path = base + ".qmp"
        self.console_log = base + ".console.log"
        self.console_socket = base + ".console.sock" if console_input else None
        self.qemu_log = base + ".qemu.log"
        self.args = qemu_args(self.console_log, self.qmp_path, memory_mib=memory_mib, cmdline=cmdline,
                              console_socket=self.console_socket, incoming=incoming,
                              kernel=kernel, initrd=initrd)
        if incoming:  # stay paused after the migration until `cont`, as under libvirt
            self.args.append("-S")
        self.console = Console(self.console_log)
        self.proc = self.qmp = self._input = None

    def start(self, timeout=60):
        with open(self.qemu_log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while self.qmp is None:
            if not self.alive():
                raise RuntimeError(f"QEMU exited with {self.proc.returncode}: {self.qemu_stderr()}")
            try:
                self.qmp = Qmp(self.qmp_path, timeout=60)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def qemu_stderr(self):
        try:
            with open(self.qemu_log, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def send(self, command):
        """Writes a command line to the guest's console (console_input=True)."""
        if self._input is None:
            self._input = ConsoleSocket(self.console_socket)
        self._input.send(command)

    def stop(self):
        """Ends QEMU by PID (SIGKILL: its guest state is of no further use)."""
        for c in (self._input, self.qmp):
            if c is not None:
                c.close()
        self._input = self.qmp = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()


def prepare_migration(src, dst, socket_path, max_bandwidth=None, downtime_limit_ms=None):
    """MIGRATION events on both sides, the destination listening on
    `socket_path` (`migrate-incoming`), the source's parameters set: what comes
    before `migrate`."""
    for q in (src.qmp, dst.qmp):  # MIGRATION events are off by default
        q.execute("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
    dst.qmp.execute("migrate-incoming", uri="unix:" + socket_path)
    # QEMU's default bandwidth cap (128 MiB/s) is below what the guest can
    # dirty: lift it unless the caller wants one (libvirt lifts it too).
    params = {"max-bandwidth": max_bandwidth or (1 << 40)}
    if downtime_limit_ms is not None:
        params["downtime-limit"] = downtime_limit_ms
    src.qmp.execute("migrate-set-parameters", **params)


def migration_ended(data):
    return data.get("status") in MIGRATION_END


def resume_destination(dst, timeout=60):
    """Waits for the destination's end of the migration and resumes it."""
    if dst.qmp.wait_event("MIGRATION", migration_ended, timeout) is None:
        raise RuntimeError("the destination QEMU never reported the end of the migration")
    if dst.qmp.execute("query-status")["status"] != "running":
        dst.qmp.execute("cont")


def migrate(src, dst, socket_path, timeout=120, max_bandwidth=None, downtime_limit_ms=None):
    """Migrates QemuGuest src into QemuGuest dst (started with incoming=True)
    over one UNIX socket, driven by QMP as QEMU.md describes, then resumes dst.
    Returns the source's final query-migrate; raises RuntimeError if the
    migration did not complete within `timeout` s (after cancelling it)."""
    prepare_migration(src, dst, socket_path, max_bandwidth, downtime_limit_ms)
    src.qmp.execute("migrate", uri="unix:" + socket_path)
    ev = src.qmp.wait_event("MIGRATION", migration_ended, timeout)
    info = src.qmp.execute("query-migrate")
    if ev is None:
        src.qmp.execute("migrate_cancel")
        raise RuntimeError(f"migration not finished after {timeout:g}s: {info}")
    if ev["data"]["status"] != "completed":
        raise RuntimeError(f"migration {ev['data']['status']}: {info.get('error-desc', info)}")
    resume_destination(dst)
    return info
