"""Logging as libvirtd does it: log_filters and log_outputs in ferryd's config
with libvirt's syntax, checked on real daemons during a real tunnelled
migration driven by virsh; malformed settings refused at start naming them."""

import os
import re
import shutil
import tempfile
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

# "2026-11-30 11:22:33.456 debug tunnel.stream: ..." -> (level, module)
LINE = re.compile(r"^\S+ \S+ (debug|info|warning|error) ([\w.-]+): ", re.M)


def levels_and_modules(text):
    return LINE.findall(text)


class FiltersAndOutputsTest(ft.DaemonTestCase):
    def test_tunnel_debug_lines_reach_the_file_and_nothing_else_does(self):
        src_log = os.path.join(self.make_dir(), "source-debug.log")
        dst_log = os.path.join(self.make_dir(), "destination-debug.log")
        src = self.start_daemon(
            name="source",
            extra_conf=f'log_filters = "1:tunnel 4:*"\nlog_outputs = "1:file:{src_log}"\n')
        # The control: the same migration logged at debug for every module
        # has debug lines from modules other than the tunnel.
        dst = self.start_daemon(
            name="destination", extra_conf=f'log_level = 1\nlog_outputs = "1:file:{dst_log}"\n')
        xml = ft.write_file(src.dir, "vm1.xml", ft.domain_xml("vm1", memory_mib=32))
        ft.virsh(src.tcp_uri, "define", xml)
        ft.virsh(src.tcp_uri, "start", "vm1")
        rc, out, err = ft.migrate(src, dst, "vm1", "--live")
        self.assertEqual(rc, 0, err)

        with open(src_log) as f:
            lines = levels_and_modules(f.read())
        tunnel_debug = [m for lvl, m in lines if lvl == "debug" and m.startswith("tunnel")]
        self.assertTrue(tunnel_debug, f"no tunnel debug line in {src_log}: {lines}")
        others = [(lvl, m) for lvl, m in lines if "tunnel" not in m and lvl != "error"]
        self.assertEqual(others, [], "lines from outside the tunnel passed '4:*'")
        # With outputs set, stderr no longer gets the lines.
        self.assertEqual(levels_and_modules(src.log()), [])

        with open(dst_log) as f:
            control = levels_and_modules(f.read())
        self.assertTrue([m for lvl, m in control if lvl == "debug" and "tunnel" not in m],
                        f"control: no non-tunnel debug lines in {dst_log}")
        self.assertTrue([m for lvl, m in control if lvl == "debug" and m.startswith("tunnel")])

    def test_output_priority_applies_after_the_filters(self):
        d = self.start_daemon(extra_conf='log_level = 1\nlog_outputs = "2:stderr"\n')
        ft.virsh(d.tcp_uri, "list", "--all")
        lines = levels_and_modules(d.log())
        self.assertTrue([1 for lvl, _ in lines if lvl == "info"], d.log())
        self.assertNotIn("debug", [lvl for lvl, _ in lines])

    def make_dir(self):
        path = tempfile.mkdtemp(prefix="ferry-log-")
        self.addCleanup(shutil.rmtree, path, True)
        return path


class RefusedSettingsTest(unittest.TestCase):
    def refused(self, extra_conf):
        d = ft.Daemon(extra_conf=extra_conf)
        try:
            with self.assertRaises(RuntimeError) as cm:
                d.start()
            self.assertEqual(d.proc.returncode, 2, d.log())
            return str(cm.exception)
        finally:
            d.cleanup()

    def test_malformed_filter_is_named(self):
        msg = self.refused('log_filters = "3:remote 9:tunnel"\n')
        self.assertIn("log_filters", msg)
        self.assertIn("'9:tunnel'", msg)

    def test_malformed_output_is_named(self):
        msg = self.refused('log_outputs = "3:stderr 1:file:relative.log"\n')
        self.assertIn("'1:file:relative.log'", msg)
        msg = self.refused('log_outputs = "1:network:host"\n')
        self.assertIn("'1:network:host'", msg)

    def test_output_file_that_cannot_be_opened_is_named(self):
        msg = self.refused('log_outputs = "1:file:/nonexistent-ferry-dir/ferryd.log"\n')
        self.assertIn("/nonexistent-ferry-dir/ferryd.log", msg)


if __name__ == "__main__":
    unittest.main()
