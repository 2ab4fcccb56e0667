"""Post-copy migration of a QEMU domain between two ferryd (TLS+SASL and
TCP, tunnelled and proxy mode) with the stock virsh and python3-libvirt:
`virsh migrate --postcopy` then `virsh migrate-postcopy`,
`--postcopy-after-precopy` (virsh waits for the migration-iteration event),
python3-libvirt's migrateStartPostCopy, the domain states and lifecycle events
libvirt gives a post-copy migration, and the test guest (tests/guest/)
verifying all its memory on the destination after each move.

The guest dirties 32 MiB every 20 ms while the migration is capped at
10 MiB/s: pre-copy alone would never converge, so every move here completes
only because it switched to post-copy."""

import glob
import json
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import guest  # noqa: E402
from test_qemu_migration import NAME, VERIFY_TIMEOUT, QemuMigrationCase  # noqa: E402

BANDWIDTH = "10"  # MiB/s: well below what the guest dirties
# How long the guest is watched after each move. A guest whose kernel memory
# arrived stale (QEMU 7.2's TCG, docs/qemu.md) crashed 2 to 30 s after the
# move; a crash fails the test (no rerun: it means memory arrived wrong).
WATCH_S = 15


class PostcopyGuestCase(QemuMigrationCase):
    """A verification pass after the move, WATCH_S seconds of a guest that
    does not crash, then another pass."""

    def verified_after_move(self, log, before):
        counter = super().verified_after_move(log, before)
        con = guest.Console(log)
        deadline = time.monotonic() + WATCH_S
        while time.monotonic() < deadline:
            con.check()
            time.sleep(0.5)
        done = max(r["pass"] for r in con.results())
        r = con.wait_verified(VERIFY_TIMEOUT, after_pass=done)
        self.assertGreater(r["counter"], counter)
        return con.last_counter()

# python3-libvirt: a migration in one thread, migrateStartPostCopy once data
# moves, and the states both domains go through until it returns.
PYTHON_SCENARIO = r"""
import json, os, sys, threading, time, traceback, libvirt
src_uri, dst_uri, peer_uri, name, xml_path, bandwidth = sys.argv[1:7]
src = libvirt.open(src_uri)
dst = libvirt.open(dst_uri)
dom = src.lookupByName(name)
# The control calls go over a connection of their own. libvirt 9.0's client
# loses a wakeup when a second thread calls on a connection whose first
# thread is blocked in a long call (its call is queued while the first thread
# is between releasing the connection's lock and entering its GLib loop, so
# the loop's quit is lost): without keepalive pings from the daemon, which
# only a client with an event loop asks for, the call is never sent and
# migrateToURI3 waits for the switch forever. One run in about five hung so.
ctl = libvirt.open(src_uri).lookupByName(name)
errors, control = [], []
def migrate():
    try:
        dom.migrateToURI3(peer_uri, {libvirt.VIR_MIGRATE_PARAM_DEST_XML: open(xml_path).read(),
                                     libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: int(bandwidth)},
                          libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER |
                          libvirt.VIR_MIGRATE_TLS | libvirt.VIR_MIGRATE_POSTCOPY)
    except libvirt.libvirtError as e:
        errors.append(str(e))
def report(**extra):
    print(json.dumps(dict({"errors": errors, "control": control}, **extra)), flush=True)
# A control call that never returns would hang the test: say which one.
step = ["start"]
def watchdog():
    time.sleep(300)
    control.append("no progress within 300 s, last step: " + step[0])
    report(src=[], dst=[])
    os._exit(3)
threading.Thread(target=watchdog, daemon=True).start()
t = threading.Thread(target=migrate)
t.start()
src_states, dst_states, timings = set(), set(), {}
# The states both sides go through, sampled on connections of their own
# until the migration returns, whatever the calls below wait for.
def sample(uri, states):
    d = libvirt.open(uri)
    while t.is_alive():
        try:
            states.add(tuple(d.lookupByName(name).state()))
        except libvirt.libvirtError:
            pass
        time.sleep(0.02)
samplers = [threading.Thread(target=sample, args=(src_uri, src_states)),
            threading.Thread(target=sample, args=(dst_uri, dst_states))]
for s in samplers:
    s.start()
try:
    step[0] = "jobStats until data moves"
    deadline = time.monotonic() + 120
    while ctl.jobStats().get("data_processed", 0) == 0:
        if time.monotonic() > deadline or not t.is_alive():
            break
        time.sleep(0.05)
    step[0] = "migrateStartPostCopy"
    t0 = time.monotonic()
    ctl.migrateStartPostCopy()
    timings["migrateStartPostCopy_s"] = round(time.monotonic() - t0, 3)
    step[0] = "migrateToURI3 returning after migrateStartPostCopy returned in %.1f s" % (
        time.monotonic() - t0)
except Exception:
    control.append(step[0] + ": " + traceback.format_exc())
    try:  # end the migration so that its thread returns
        libvirt.open(src_uri).lookupByName(name).abortJob()
    except libvirt.libvirtError as e:
        control.append("abortJob: " + str(e))
t.join()
for s in samplers:
    s.join()
report(src=sorted(src_states), dst=sorted(dst_states), timings=timings)
"""


class QemuPostcopyTest(PostcopyGuestCase):

    def events(self, d):
        """`virsh event --loop --all` on d, its output in a file (stopped by PID)."""
        path = os.path.join(d.dir, f"events-{len(self.event_procs)}.txt")
        out = open(path, "w")
        p = subprocess.Popen(["virsh", "-c", self.local(d), "event", "--loop", "--all"], stdout=out,
                             stderr=subprocess.STDOUT, env={k: v for k, v in os.environ.items()
                                                            if k != "LIBVIRT_DEFAULT_URI"})
        out.close()
        self.event_procs.append(p)
        ft.wait_for(lambda: os.path.getsize(path) > 0 or p.poll() is not None, 2)
        return path

    def setUp(self):
        super().setUp()
        self.event_procs = []

    def tearDown(self):
        for p in self.event_procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.event_procs = []
        super().tearDown()

    def read(self, path):
        with open(path) as f:
            return f.read()

    def wait_event(self, path, pattern, timeout=30):
        return ft.wait_for(lambda: re.search(pattern, self.read(path)), timeout, 0.1)

    def assert_record_holds_both_sides(self, src):
        """The source's newest flight record holds the destination's too,
        which a post-copy destination keeps only once the last page is in
        (a moment after the source sent it)."""
        def newest():
            rec = sorted(glob.glob(os.path.join(src.flight_dir, f"*-{NAME}-source-*.flight.jsonl")))
            return self.read(rec[-1]) if rec else ""
        # written as the migration call returns: give it a moment
        ft.wait_for(lambda: '"ev":"peer_record"' in newest(), 10, 0.2)
        text = newest()
        self.assertIn('"side":"destination"', text, src.log()[-3000:])
        self.assertIn('"ev":"peer_record"', text)

    def test_postcopy_tunnelled_proxy_and_python_with_memory_verified_by_the_guest(self):
        a, b = self.daemon("A"), self.daemon("B")
        before = self.boot(a, wss="32M", dirty_ms=20)
        env = {"LIBVIRT_AUTH_FILE": self.authfile}

        # libvirt's refusals: no post-copy for a paused or non-live move, and
        # no switch without a migration started with --postcopy.
        rc, _, err = self.virsh_env(self.local(a), "migrate", "--p2p", "--postcopy", NAME, self.tcp(b),
                                    env=env)
        self.assertNotEqual(rc, 0)
        self.assertIn("post-copy migration is not supported with non-live or paused migration", err)
        rc, _, err = self.virsh_env(self.local(a), "migrate-postcopy", NAME)
        self.assertNotEqual(rc, 0)
        self.assertIn("post-copy can only be started while outgoing migration is in progress", err)
        self.assertEqual(self.state(a), "running (booted)")

        # 1. Tunnelled inside TLS + SASL: virsh migrate --postcopy, then
        # virsh migrate-postcopy once data moves.
        ev_a, ev_b = self.events(a), self.events(b)
        xml = self.dest_xml(a, b, os.path.join(b.dir, "console-2.log"))
        e = dict(os.environ, **env)
        e.pop("LIBVIRT_DEFAULT_URI", None)
        mig = subprocess.Popen(["virsh", "-c", self.local(a), "migrate", "--live", "--p2p", "--tunnelled",
                                "--postcopy", "--bandwidth", BANDWIDTH, "--xml", xml, NAME, self.tls(b)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        try:
            def moving():
                out = ft.virsh(self.local(a), "domjobinfo", NAME, check=False)[1]
                return "Unbounded" in out and re.search(r"Data processed:\s+[1-9]", out)
            self.assertTrue(ft.wait_for(moving, 120, 0.2), ft.virsh(self.local(a), "domjobinfo", NAME)[1])
            # Still pre-copy: no post-copy migration to pause.
            rc, _, err = self.virsh_env(self.local(a), "domjobabort", "--postcopy", NAME)
            self.assertNotEqual(rc, 0)
            self.assertIn("current job is not outgoing migration in post-copy mode", err)
            # A post-copy migration is past aborting once switched; before, a
            # second switch request is refused.
            ft.virsh(self.local(a), "migrate-postcopy", NAME)
            rc, _, err = self.virsh_env(self.local(a), "migrate-postcopy", NAME)
            self.assertNotEqual(rc, 0)
            self.assertIn("post-copy already started", err)
            self.assertTrue(self.wait_event(ev_a, r"'mg': Suspended Post-copy", 120), self.read(ev_a))
            rc, _, err = self.virsh_env(self.local(a), "domjobabort", NAME)
            if rc != 0:  # the migration may have completed meanwhile
                self.assertRegex(err, r"cannot abort migration in post-copy mode|no job is active")
            out, err = mig.communicate(timeout=300)
        finally:
            if mig.poll() is None:
                mig.kill()
                mig.wait()
        self.assertEqual(mig.returncode, 0, err + a.log()[-3000:] + b.log()[-3000:])
        self.assertEqual(self.state(b), "running (migrated)")
        self.assertEqual(self.state(a), "shut off (migrated)")
        info = ft.virsh(self.local(a), "domjobinfo", "--completed", NAME)[1]
        self.assertRegex(info, r"Postcopy requests:\s+\d+", info)
        self.assertRegex(info, r"Job type:\s+Completed")
        # The events libvirt sends for post-copy: the source suspended
        # (post-copy), the destination resumed in post-copy, then migrated.
        self.assertTrue(self.wait_event(ev_b, r"'mg': Resumed Migrated"), self.read(ev_b))
        ea, eb = self.read(ev_a), self.read(ev_b)
        self.assertRegex(ea, r"(?s)Suspended Post-copy.*Stopped Migrated")
        self.assertRegex(eb, r"(?s)Started Migrated.*Resumed Post-copy.*Resumed Migrated")
        self.assertRegex(ea, r"event 'migration-iteration' for domain '?mg'?: iteration: '?1")
        self.assert_record_holds_both_sides(a)
        before = self.verified_after_move(self.console, before)

        # 2. Proxy mode in the clear (SASL on TCP), back to A:
        # --postcopy-after-precopy, virsh switching at the second iteration.
        self.migrate(b, a, self.tcp(a), os.path.join(a.dir, "console-3.log"), "--postcopy",
                     "--postcopy-after-precopy", "--bandwidth", BANDWIDTH)
        self.assertEqual(self.state(a), "running (migrated)")
        self.assertNotIn(NAME, self.names(b))  # it came transient
        self.assertTrue(self.wait_event(ev_a, r"(?s)Resumed Post-copy.*Resumed Migrated"), self.read(ev_a))
        eb = self.read(ev_b)
        self.assertRegex(eb, r"(?s)migration-iteration' for domain '?mg'?: iteration: '?2.*Suspended Post-copy")
        self.assert_record_holds_both_sides(b)
        before = self.verified_after_move(self.console, before)

        # 3. python3-libvirt, proxy mode over a TLS data connection, to B:
        # migrateStartPostCopy; the states both sides go through.
        xml = self.dest_xml(a, b, os.path.join(b.dir, "console-4.log"))
        p = subprocess.run(["/usr/bin/python3", "-c", PYTHON_SCENARIO, self.local(a), self.local(b),
                            self.tls(b), NAME, xml, BANDWIDTH], capture_output=True, text=True,
                           timeout=400, env=e)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = json.loads(p.stdout)
        self.assertEqual(r["control"], [], a.log()[-3000:])
        self.assertEqual(r["errors"], [], a.log()[-3000:])
        self.assertIn([3, 12], r["src"], r)  # paused, post-copy
        self.assertIn([1, 10], r["dst"], r)  # running, post-copy
        self.assertEqual(self.state(b), "running (migrated)")
        self.verified_after_move(self.console, before)
        ft.virsh(self.local(b), "destroy", NAME)


if __name__ == "__main__":
    unittest.main(verbosity=2)
