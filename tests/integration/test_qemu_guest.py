"""The test guest (tests/guest/) migrated QEMU -> QEMU directly, without ferryd:
QMP on UNIX sockets, `-incoming defer` + `migrate-incoming`, `migrate` over one
UNIX socket. The destination's console proves the move: the guest verified
every page after it and its counter carried on; a byte corrupted on the source
before the move is reported FAIL by the destination; a guest kernel crash is
told apart from both. These prove the guest and tests/integration/guest.py,
which the QEMU driver's tests build on."""

import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guest  # noqa: E402

MEMORY_MIB = 256
FILL = "64M"
PAGES = 64 * 256  # 4 KiB pages in FILL
BOOT_S = 180  # boot + fill under TCG on two cores shared with other builds
MIGRATE_S = 300
# 2 MiB rewritten every 100 ms (20 MiB/s): dirtying goes on through the move,
# and it converges even when a loaded host slows QEMU's stream tenfold.
WSS = "2M"


class QemuGuestMigration(unittest.TestCase):
    def setUp(self):
        guest.require()
        self.dir = tempfile.mkdtemp(prefix="ferry-guest-test-")
        self.guests = []

    def tearDown(self):
        self.stop_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop_all(self):
        for g in self.guests:
            g.stop()
        self.guests = []

    def start(self, name, **kw):
        g = guest.QemuGuest(self.dir, name, memory_mib=MEMORY_MIB, console_input=True, **kw)
        self.guests.append(g)
        return g.start()

    def boot_pair(self, tag, **cmdline):
        """A booted source with its pattern in RAM, and a waiting destination."""
        cmd = guest.kernel_cmdline(fill=FILL, **cmdline)
        src = self.start(tag + "-src", cmdline=cmd)
        dst = self.start(tag + "-dst", cmdline=cmd, incoming=True)
        ready = src.console.wait_ready(BOOT_S, alive=src.alive)
        self.assertEqual(ready.get("pages"), PAGES, ready["line"])
        return src, dst

    @guest.retry_on_guest_crash("stop_all")
    def test_migration_keeps_memory_and_counter(self):
        """Periodic verification: every page checked on the destination after the
        move, the counter past the source's last one, no second boot; then a
        kernel crash on request reads as GuestCrashed, not as a FAIL."""
        src, dst = self.boot_pair("keep", wss=WSS, dirty_ms=100, verify_s=1)
        before = src.console.wait_verified(60, alive=src.alive)
        self.assertEqual(before.get("pages"), PAGES, before["line"])
        info = guest.migrate(src, dst, os.path.join(self.dir, "keep.mig"), timeout=MIGRATE_S)
        self.assertEqual(info["status"], "completed")
        self.assertGreater(info["ram"]["transferred"], PAGES * 4096)
        last_on_source = src.console.last_counter()
        src.stop()

        after = dst.console.wait_verified(60, alive=dst.alive)
        self.assertEqual(after.get("pages"), PAGES, after["line"])
        self.assertGreater(after["counter"], last_on_source, "the counter did not carry on")
        self.assertNotIn("ready", [e["kind"] for e in dst.console.events()], "the guest booted again")
        self.assertTrue(after["began_here"])
        # Still dirtying and verifying on the destination: the next pass too.
        again = dst.console.wait_verified(60, alive=dst.alive, after_pass=after["pass"])
        self.assertGreater(again["counter"], after["counter"])

        dst.send("crash")
        with self.assertRaises(guest.GuestCrashed):
            dst.console.wait_verified(60, alive=dst.alive, after_pass=again["pass"])

    @guest.retry_on_guest_crash("stop_all")
    def test_corrupted_byte_is_reported_after_migration(self):
        """On-request verification: the source verifies OK, a byte is flipped
        behind the workload's back, the destination's check names that page
        and byte after the move, and only that page."""
        src, dst = self.boot_pair("corrupt", wss=WSS, dirty_ms=100, verify_s=0)
        src.send("verify")
        ok = src.console.wait_verified(60, alive=src.alive)
        self.assertEqual(ok["kind"], "verify ok")
        src.send("corrupt 1234")
        flip = src.console.wait_for(lambda ev: next((e for e in ev if e["kind"] == "corrupt"), None),
                                    30, "FERRY-GUEST corrupt", src.alive)
        self.assertEqual(flip["page"], 1234)
        guest.migrate(src, dst, os.path.join(self.dir, "corrupt.mig"), timeout=MIGRATE_S)
        src.stop()

        dst.send("verify")
        fail = dst.console.wait_fail(60, alive=dst.alive)
        self.assertEqual((fail["page"], fail["offset"], fail["bad_pages"]),
                         (flip["page"], flip["offset"], 1), fail["line"])
        self.assertTrue(fail["began_here"])
        with self.assertRaises(guest.VerifyFailed):
            dst.console.wait_verified(5, alive=dst.alive)


class ConsoleParsing(unittest.TestCase):
    """The console reader on logs written by hand: what it reads as what."""

    def console(self, text):
        d = tempfile.mkdtemp(prefix="ferry-guest-test-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "console.log")
        with open(path, "w") as f:
            f.write(text)
        return guest.Console(path)

    def test_kernel_message_inside_a_line_is_taken_out(self):
        c = self.console("[    1.000000] booting\r\n"
                         "FERRY-GUEST ready fill=67108864 pa[    5.123456] hpet: Lost 1 RTC interrupts\r\n"
                         "ges=16384 wss_pages=2048 counter=0\r\n"
                         "FERRY-GU[    6.000000] rcu: INFO: stall\r\nEST verify begin pass=1 counter=3\r\n"
                         "FERRY-GUEST verify ok pass=1 pages=16384 counter=4 ms=9\r\n")
        self.assertEqual(c.wait_ready(1)["pages"], 16384)
        self.assertEqual(c.wait_verified(1)["pass"], 1)
        self.assertIn("[    1.000000] booting", c.lines())

    def test_pass_begun_before_the_log_does_not_count(self):
        c = self.console("FERRY-GUEST verify ok pass=3 pages=10 counter=7 ms=1\r\n"
                         "FERRY-GUEST verify begin pass=4 counter=9\r\n"
                         "FERRY-GUEST verify ok pass=4 pages=10 counter=10 ms=1\r\n")
        r = c.wait_verified(1)
        self.assertEqual((r["pass"], r["counter"]), (4, 10))
        self.assertEqual(c.last_counter(), 10)

    def test_hex_values_stay_strings_when_all_their_digits_are_decimal(self):
        c = self.console("FERRY-GUEST disk ok blocks=2048 writes=5632 digest=4602979552308349\n")
        r = c.events()[0]
        self.assertEqual((r["blocks"], r["digest"]), (2048, "4602979552308349"))

    def test_fail_crash_and_error_are_told_apart(self):
        fail = self.console("FERRY-GUEST verify begin pass=1 counter=1\n"
                            "FERRY-GUEST verify FAIL pass=1 page=5 offset=9 expected=00 got=01 "
                            "bad_pages=1 pages=10 counter=2 ms=1\n")
        with self.assertRaises(guest.VerifyFailed):
            fail.wait_verified(1)
        self.assertEqual(fail.wait_fail(1)["page"], 5)
        crash = self.console("FERRY-GUEST verify begin pass=1 counter=1\n"
                             "[   12.5] BUG: kernel NULL pointer dereference, address: 0000000000000000\n")
        with self.assertRaises(guest.GuestCrashed):
            crash.wait_verified(1)
        err = self.console("FERRY-GUEST error unknown parameter ferry.nope\n")
        with self.assertRaises(guest.GuestError):
            err.wait_ready(1)
        with self.assertRaises(TimeoutError):
            self.console("").wait_ready(0.2)


if __name__ == "__main__":
    unittest.main()
