"""TLS, SASL and read-only access as libvirt users set them up: certificates
made here with certtool, users in a sasldb made with saslpasswd2, credentials
in libvirt auth files, and the stock virsh, python3-libvirt and ferry's own
client (remote_peer_open, through tests/tools/ferry-peer-probe) against ferryd."""

import os
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

PROBE = os.path.join(ft.BUILD, "tests/tools/ferry-peer-probe")
SOURCE = os.environ.get("FERRY_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))

AUTH_LIST, AUTH_SASL_INIT, AUTH_SASL_START, AUTH_SASL_STEP = 66, 67, 68, 69
CONNECT_OPEN, GET_HOSTNAME, DOMAIN_GET_XML_DESC = 1, 59, 14
DOMAIN_XML = "<domain type='sim'><name>ro-test</name><memory>1024</memory></domain>"


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{cmd} failed: {p.stderr}")
    return p.stdout


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def probe(uri, *args, env=None, check=True):
    """Runs ferry's own client; returns (rc, stdout, stderr)."""
    e = dict(os.environ)
    e.pop("LIBVIRT_AUTH_FILE", None)
    e.update(env or {})
    p = subprocess.run([PROBE, uri, *args], capture_output=True, text=True, timeout=60, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"ferry-peer-probe {uri} {args} failed: {p.stderr}")
    if "ERROR: AddressSanitizer" in p.stderr or "ERROR: LeakSanitizer" in p.stderr:
        raise AssertionError("ferry-peer-probe sanitizer report:\n" + p.stderr)
    return p.returncode, p.stdout, p.stderr


def virsh_env(uri, *args, env=None, check=True):
    e = dict(os.environ)
    e.pop("LIBVIRT_DEFAULT_URI", None)
    e.pop("LIBVIRT_AUTH_FILE", None)
    e.update(env or {})
    p = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=60,
                       env=e, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p.returncode, p.stdout, p.stderr


# ---- certificates ----

class Pki:
    """A CA, another CA, and the certificates the tests need, made with certtool."""

    TEMPLATES = {
        "server": "organization = ferry\ncn = 127.0.0.1\nip_address = 127.0.0.1\n"
                  "tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n",
        "server-wronghost": "organization = ferry\ncn = wrong.example\ndns_name = wrong.example\n"
                            "ip_address = 10.9.9.9\ntls_www_server\nencryption_key\nsigning_key\n"
                            "expiration_days = 30\n",
        "server-expired": "cn = 127.0.0.1\nip_address = 127.0.0.1\ntls_www_server\n"
                          "encryption_key\nsigning_key\n"
                          "activation_date = \"2019-01-01 00:00:00\"\n"
                          "expiration_date = \"2020-01-01 00:00:00\"\n",
        "server-future": "cn = 127.0.0.1\nip_address = 127.0.0.1\ntls_www_server\n"
                         "encryption_key\nsigning_key\n"
                         "activation_date = \"2090-01-01 00:00:00\"\n"
                         "expiration_date = \"2091-01-01 00:00:00\"\n",
        "client": "country = GB\norganization = x\ncn = y\ntls_www_client\nencryption_key\n"
                  "signing_key\nexpiration_days = 30\n",
        "client-admin": "country = GB\norganization = x\ncn = admin1\ntls_www_client\n"
                        "encryption_key\nsigning_key\nexpiration_days = 30\n",
        "client-expired": "country = GB\norganization = x\ncn = old\ntls_www_client\n"
                          "encryption_key\nsigning_key\n"
                          "activation_date = \"2019-01-01 00:00:00\"\n"
                          "expiration_date = \"2020-01-01 00:00:00\"\n",
        "client-future": "country = GB\norganization = x\ncn = future\ntls_www_client\n"
                         "encryption_key\nsigning_key\n"
                         "activation_date = \"2090-01-01 00:00:00\"\n"
                         "expiration_date = \"2091-01-01 00:00:00\"\n",
    }

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ferry-pki-")
        # One key per role is enough: what is tested is the certificate.
        for key in ("ca", "ca2", "server", "client"):
            self._certtool("--generate-privkey", "--key-type", "rsa", "--bits", "2048",
                           "--outfile", self.path(f"{key}key.pem"))
        for ca, cn in (("ca", "ferry test CA"), ("ca2", "some other CA")):
            tmpl = self._template(ca, f"cn = {cn}\nca\ncert_signing_key\nexpiration_days = 60\n")
            self._certtool("--generate-self-signed", "--load-privkey", self.path(f"{ca}key.pem"),
                           "--template", tmpl, "--outfile", self.path(f"{ca}cert.pem"))
        for name, text in self.TEMPLATES.items():
            key = "server" if name.startswith("server") else "client"
            self.sign(name, key, "ca", text)
        self.sign("server-otherca", "server", "ca2", self.TEMPLATES["server"])
        self.sign("client-otherca", "client", "ca2", self.TEMPLATES["client"])
        self.sign("client-revoked", "client", "ca",
                  self.TEMPLATES["client"].replace("cn = y", "cn = revoked"))
        # Revocation lists: one naming the revoked client, one naming the server.
        crl = self._template("crl", "crl_next_update = 30\ncrl_number = 1\n")
        for out, cert in (("crl-client.pem", "client-revoked"), ("crl-server.pem", "server")):
            self._certtool("--generate-crl", "--load-ca-privkey", self.path("cakey.pem"),
                           "--load-ca-certificate", self.path("cacert.pem"),
                           "--load-certificate", self.path(cert + ".pem"),
                           "--template", crl, "--outfile", self.path(out))

    def path(self, name):
        return os.path.join(self.dir, name)

    def _template(self, name, text):
        p = self.path(name + ".info")
        with open(p, "w") as f:
            f.write(text)
        return p

    def _certtool(self, *args):
        run(["certtool", *args])

    def sign(self, name, key, ca, text):
        self._certtool("--generate-certificate", "--load-privkey", self.path(f"{key}key.pem"),
                       "--load-ca-certificate", self.path(f"{ca}cert.pem"),
                       "--load-ca-privkey", self.path(f"{ca}key.pem"),
                       "--template", self._template(name, text),
                       "--outfile", self.path(f"{name}.pem"))

    def server_conf(self, cert="server", port=None, extra=""):
        return (f'listen_tls = 1\ntls_port = {port}\nauth_tls = "none"\n'
                f'ca_file = "{self.path("cacert.pem")}"\n'
                f'cert_file = "{self.path(cert + ".pem")}"\n'
                f'key_file = "{self.path("serverkey.pem")}"\n' + extra)

    def client_dir(self, cert="client", ca="ca"):
        """A pkipath directory as libvirt wants it; cert None: no client certificate."""
        d = tempfile.mkdtemp(prefix="pki-", dir=self.dir)
        shutil.copy(self.path(f"{ca}cert.pem"), os.path.join(d, "cacert.pem"))
        if cert:
            shutil.copy(self.path(f"{cert}.pem"), os.path.join(d, "clientcert.pem"))
            shutil.copy(self.path("clientkey.pem"), os.path.join(d, "clientkey.pem"))
        return d

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class PkiTestCase(ft.DaemonTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = Pki()

    @classmethod
    def tearDownClass(cls):
        cls.pki.cleanup()

    def tls_daemon(self, cert="server", extra="", env=None):
        port = ft.free_port()
        d = self.start_daemon(extra_conf=self.pki.server_conf(cert, port, extra), env=env)
        d.tls_port = port
        wait_port(port)
        return d

    def tls_uri(self, d, pkidir, params=""):
        return f"sim+tls://127.0.0.1:{d.tls_port}/system?pkipath={pkidir}{params}"

    def bare_tls_server(self, cert, connections=1):
        """A TLS server on 127.0.0.1 with a certificate ferryd would refuse to load
        (OpenSSL, from this process), for that many connections: the client
        must refuse it after the handshake."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.path(cert + ".pem"), self.pki.path("serverkey.pem"))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(10)

        def serve():
            for _ in range(connections):
                try:
                    conn, _ = listener.accept()
                    conn.settimeout(10)
                    with ctx.wrap_socket(conn, server_side=True) as s:
                        s.recv(1)
                except (OSError, ssl.SSLError):
                    pass  # the client gives up during or after the handshake

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        self.addCleanup(lambda: (t.join(15), listener.close()))
        return listener.getsockname()[1]

    def wait_log(self, d, text, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in d.log():
                return
            time.sleep(0.05)
        self.fail(f"ferryd log lacks {text!r}:\n{d.log()[-3000:]}")


# ---- TLS ----

class TlsTest(PkiTestCase):
    def test_virsh_with_a_good_client_certificate(self):
        d = self.tls_daemon(extra="log_level = 1\n")
        uri = self.tls_uri(d, self.pki.client_dir())
        _, out, _ = ft.virsh(uri, "list", "--all")
        self.assertRegex(out, r"Id\s+Name\s+State")
        _, out, _ = ft.virsh(uri, "hostname")
        self.assertEqual(out.strip(), socket.gethostname())
        self.wait_log(d, "DN 'C=GB,O=x,CN=y'")

    def test_python_libvirt_over_tls_is_secure(self):
        d = self.tls_daemon()
        uri = self.tls_uri(d, self.pki.client_dir())
        out = run(["/usr/bin/python3", "-c",
                   "import sys, libvirt; c = libvirt.open(sys.argv[1]); "
                   "print(c.isSecure(), c.isEncrypted(), c.getHostname())", uri])
        self.assertEqual(out.split(), ["1", "1", socket.gethostname()])

    def check_refused_by_server(self, d, cert_dir, log_text, params="&no_sanity=1"):
        """virsh (own-certificate checks off, so it sends the certificate) is refused
        after the handshake; ferryd's log names the reason and the peer."""
        rc, _, err = ft.virsh(self.tls_uri(d, cert_dir, params), "list", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("server verification (of our certificate or IP address) failed", err)
        self.wait_log(d, log_text)
        line = [l for l in d.log().splitlines() if log_text in l][0]
        self.assertRegex(line, r"refused TLS connection from 127\.0\.0\.1:\d+ on tls ")

    def test_client_certificate_from_an_unknown_ca(self):
        d = self.tls_daemon()
        self.check_refused_by_server(
            d, self.pki.client_dir("client-otherca"),
            "client certificate 'C=GB,O=x,CN=y' is not signed by the CA in "
            + self.pki.path("cacert.pem"))

    def test_expired_client_certificate(self):
        d = self.tls_daemon()
        self.check_refused_by_server(
            d, self.pki.client_dir("client-expired"),
            "client certificate 'C=GB,O=x,CN=old' has expired (valid until 2020-01-01 00:00:00 UTC)")

    def test_not_yet_valid_client_certificate(self):
        d = self.tls_daemon()
        self.check_refused_by_server(
            d, self.pki.client_dir("client-future"),
            "client certificate 'C=GB,O=x,CN=future' is not yet valid (valid from "
            "2090-01-01 00:00:00 UTC)")

    def test_virsh_checks_its_own_certificate_first(self):
        # Without no_sanity the libvirt client refuses to use an expired certificate.
        d = self.tls_daemon()
        rc, _, err = ft.virsh(self.tls_uri(d, self.pki.client_dir("client-expired")), "list",
                              check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("has expired", err)

    def test_missing_client_certificate(self):
        d = self.tls_daemon()
        # virsh will not even try without its certificate files; ferry's client will.
        rc, _, err = probe(self.tls_uri(d, self.pki.client_dir(cert=None)), check=False)
        self.assertEqual(rc, 1)
        self.assertIn("refused our TLS session after the handshake", err)
        self.wait_log(d, "client certificate required: the client sent none")

    def test_revoked_certificates(self):
        d = self.tls_daemon(extra=f'crl_file = "{self.pki.path("crl-client.pem")}"\n')
        self.check_refused_by_server(
            d, self.pki.client_dir("client-revoked"),
            "client certificate 'C=GB,O=x,CN=revoked' has been revoked (CA revocation list)",
            params="")
        ft.virsh(self.tls_uri(d, self.pki.client_dir()), "list")  # the others get in
        # The client side reads DIR/cacrl.pem: here it revokes the server's certificate.
        pkidir = self.pki.client_dir()
        shutil.copy(self.pki.path("crl-server.pem"), os.path.join(pkidir, "cacrl.pem"))
        rc, _, err = probe(self.tls_uri(d, pkidir), check=False)
        self.assertEqual(rc, 1)
        self.assertIn("certificate of 127.0.0.1 has been revoked", err)

    def test_dn_not_in_allow_list(self):
        d = self.tls_daemon(extra='tls_allowed_dn_list = ["C=GB,O=x,CN=admin*", "C=DE,*"]\n')
        self.check_refused_by_server(
            d, self.pki.client_dir(),
            "client certificate DN 'C=GB,O=x,CN=y' is not in tls_allowed_dn_list", params="")
        # A DN the globs allow gets in.
        _, out, _ = ft.virsh(self.tls_uri(d, self.pki.client_dir("client-admin")), "hostname")
        self.assertEqual(out.strip(), socket.gethostname())

    def test_no_verify_certificate_lets_unknown_clients_in(self):
        d = self.tls_daemon(extra="tls_no_verify_certificate = 1\n")
        _, out, _ = ft.virsh(self.tls_uri(d, self.pki.client_dir("client-otherca"),
                                          "&no_sanity=1"), "hostname")
        self.assertEqual(out.strip(), socket.gethostname())
        _, out, _ = probe(self.tls_uri(d, self.pki.client_dir(cert=None)))
        self.assertEqual(out.strip(), socket.gethostname())

    def test_server_certificate_for_another_host(self):
        d = self.tls_daemon(cert="server-wronghost")
        pkidir = self.pki.client_dir()
        rc, _, err = ft.virsh(self.tls_uri(d, pkidir), "list", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("does not match the hostname 127.0.0.1", err)
        rc, _, err = probe(self.tls_uri(d, pkidir), check=False)
        self.assertEqual(rc, 1)
        self.assertIn("certificate of 127.0.0.1 does not match the host name '127.0.0.1': "
                      "it is for CN 'wrong.example', DNS 'wrong.example', IP '10.9.9.9'", err)
        # no_verify=1 skips the server checks, in both clients.
        ft.virsh(self.tls_uri(d, pkidir, "&no_verify=1"), "list")
        probe(self.tls_uri(d, pkidir, "&no_verify=1"))

    def test_server_certificate_from_an_unknown_ca(self):
        d = self.tls_daemon()
        pkidir = self.pki.client_dir(ca="ca2")  # trusts only the other CA
        rc, _, err = ft.virsh(self.tls_uri(d, pkidir, "&no_sanity=1"), "list", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("known issuer", err)
        rc, _, err = probe(self.tls_uri(d, pkidir, "&no_sanity=1"), check=False)
        self.assertEqual(rc, 1)
        self.assertIn(f"certificate of 127.0.0.1 is not signed by the CA in {pkidir}/cacert.pem",
                      err)

    def test_expired_and_not_yet_valid_server_certificates(self):
        pkidir = self.pki.client_dir()
        for cert, text in (("server-expired",
                            "certificate of 127.0.0.1 has expired (valid until "
                            "2020-01-01 00:00:00 UTC)"),
                           ("server-future",
                            "certificate of 127.0.0.1 is not yet valid (valid from "
                            "2090-01-01 00:00:00 UTC)")):
            port = self.bare_tls_server(cert)
            rc, _, err = probe(f"sim+tls://127.0.0.1:{port}/system?pkipath={pkidir}",
                               check=False)
            self.assertEqual(rc, 1, cert)
            self.assertIn(text, err)

    def test_daemon_start_errors_name_the_file(self):
        cases = [
            ('key_file = "/nonexistent/serverkey.pem"\n',
             "cannot set up TLS (listen_tls = 1): cannot read key_file "
             "'/nonexistent/serverkey.pem': No such file or directory"),
            ('cert_file = "/nonexistent/servercert.pem"\n',
             "cannot read cert_file '/nonexistent/servercert.pem': No such file or directory"),
            ('ca_file = "/nonexistent/cacert.pem"\n',
             "cannot read ca_file '/nonexistent/cacert.pem'"),
            (f'cert_file = "{self.pki.path("server-expired.pem")}"\n',
             f"cert_file '{self.pki.path('server-expired.pem')}' has expired"),
            (f'cert_file = "{self.pki.path("server-otherca.pem")}"\n',
             f"cert_file '{self.pki.path('server-otherca.pem')}' is not signed by the CA in "
             f"{self.pki.path('cacert.pem')}"),
            (f'key_file = "{self.pki.path("clientkey.pem")}"\n',
             "is not the key of cert_file"),
            ('tls_priority = "NOPE:+FOO"\n', "TLS priority string 'NOPE:+FOO' is invalid"),
        ]
        for extra, text in cases:
            port = ft.free_port()
            d = ft.Daemon(extra_conf=self.pki.server_conf("server", port, extra))
            try:
                with self.assertRaises(RuntimeError):
                    d.start()  # the files are checked before any socket is opened
                self.assertEqual(d.proc.wait(timeout=15), 1)
                self.assertIn(text, d.log())
                self.assertIsNone(d.sanitizer_report())
            finally:
                d.cleanup()

    def test_handshake_never_completed_is_dropped_and_blocks_nobody(self):
        d = self.tls_daemon(extra="tls_handshake_timeout = 1\n")
        silent = socket.create_connection(("127.0.0.1", d.tls_port))
        partial = socket.create_connection(("127.0.0.1", d.tls_port))
        partial.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
        start = time.monotonic()
        # Meanwhile others are served at once.
        _, out, _ = ft.virsh(self.tls_uri(d, self.pki.client_dir()), "hostname")
        self.assertEqual(out.strip(), socket.gethostname())
        self.assertLess(time.monotonic() - start, 1.0 + 5)
        for s in (silent, partial):
            s.settimeout(10)
            self.assertEqual(s.recv(100), b"")  # closed by the server
            s.close()
        took = time.monotonic() - start
        self.assertGreater(took, 0.8)
        self.assertLess(took, 5)
        self.wait_log(d, "TLS handshake with 127.0.0.1:")
        self.assertIn("did not complete within 1000 ms", d.log())

    def test_plain_rpc_on_the_tls_port_is_dropped_at_once(self):
        d = self.tls_daemon()
        s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=5)
        s.sendall(bytes.fromhex("0000001c200080860000000100000042000000000000000000000000"))
        t0 = time.monotonic()
        try:
            while s.recv(4096):
                pass  # a TLS alert, perhaps; then the close
        except ConnectionResetError:
            pass
        self.assertLess(time.monotonic() - t0, 3)
        s.close()
        self.wait_log(d, "TLS handshake with 127.0.0.1:")

    def test_the_server_confirms_with_one_byte_inside_tls(self):
        d = self.tls_daemon()
        ctx = ssl.create_default_context(cafile=self.pki.path("cacert.pem"))
        ctx.load_cert_chain(self.pki.path("client.pem"), self.pki.path("clientkey.pem"))
        with socket.create_connection(("127.0.0.1", d.tls_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                self.assertEqual(s.recv(1), b"\x01")
                s.sendall(ft.message(ft.REMOTE_PROGRAM, AUTH_LIST, ft.CALL, 0))
                hdr, body = ft.recv_message(s)
                self.assertEqual((hdr[2], hdr[5]), (AUTH_LIST, ft.OK))
                self.assertEqual(body, struct.pack(">II", 1, 0))  # [NONE]

    def test_stop_while_a_handshake_is_pending(self):
        d = self.tls_daemon()
        s = socket.create_connection(("127.0.0.1", d.tls_port))
        time.sleep(0.2)
        t0 = time.monotonic()
        self.assertEqual(d.stop(), 0)
        self.assertLess(time.monotonic() - t0, 5)
        s.close()

    def test_ferry_client_over_tls(self):
        d = self.tls_daemon()
        uri = self.tls_uri(d, self.pki.client_dir())
        _, out, _ = probe(uri, "hostname")
        self.assertEqual(out.strip(), socket.gethostname())
        _, out, _ = probe(uri, "secure")
        self.assertEqual(out.strip(), "1")


# ---- SASL ----

class Relay:
    """A TCP relay in front of ferryd that records every byte in both directions."""

    def __init__(self, target_port):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.target = target_port
        self.captured = bytearray()
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            r, _, _ = select.select([self.listener], [], [], 0.1)
            if not r:
                continue
            a, _ = self.listener.accept()
            b = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a, b):
        socks = [a, b]
        try:
            while not self.stopping:
                r, _, _ = select.select(socks, [], [], 0.1)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    with self.lock:
                        self.captured += data
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            a.close()
            b.close()

    def stop(self):
        self.stopping = True
        self.thread.join()
        self.listener.close()
        with self.lock:
            return bytes(self.captured)


def xdr_opaque_chars(data):
    """char<N>: a count, then every byte as a 4-byte XDR int (WIRE.md section 5)."""
    return struct.pack(">I", len(data)) + b"".join(struct.pack(">i", b) for b in data)


def xdr_string(s):
    return ft.xdr_string(s)


class SaslTestCase(PkiTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sasl_dir = tempfile.mkdtemp(prefix="ferry-sasl-")
        db = os.path.join(cls.sasl_dir, "sasldb")
        for user, pw in (("alice", "secret1"), ("bob", "secret2")):
            p = subprocess.run(["saslpasswd2", "-f", db, "-a", "libvirt", "-p", user],
                               input=pw, text=True, capture_output=True, timeout=30)
            assert p.returncode == 0, p.stderr
        with open(os.path.join(cls.sasl_dir, "libvirt.conf"), "w") as f:
            f.write(f"mech_list: digest-md5 scram-sha-256\nsasldb_path: {db}\n")
        cls.authfile = cls.write_authfile("good.conf", "alice", "secret1")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.sasl_dir, ignore_errors=True)
        super().tearDownClass()

    @classmethod
    def write_authfile(cls, name, user, password, host="127.0.0.1"):
        p = os.path.join(cls.sasl_dir, name)
        with open(p, "w") as f:
            f.write(f"[credentials-test]\nauthname={user}\npassword={password}\n\n"
                    f"[auth-libvirt-{host}]\ncredentials=test\n")
        return p

    def sasl_daemon(self, extra=""):
        conf = 'auth_tcp = "sasl"\n' + extra
        return self.tls_daemon(extra='auth_tls = "sasl"\n' + conf,
                               env={"SASL_CONF_PATH": self.sasl_dir})

    def raw_sasl_start(self, c, mech="DIGEST-MD5"):
        hdr, body = c.call(AUTH_SASL_INIT)
        self.assertEqual(hdr[5], ft.OK, ft.decode_error(body) if hdr[5] else "")
        n = struct.unpack(">I", body[:4])[0]
        mechs = body[4:4 + n].decode()
        hdr, body = c.call(AUTH_SASL_START, xdr_string(mech) + struct.pack(">i", 1)
                           + xdr_opaque_chars(b""))
        return mechs, hdr, body


def xdr_hostname_reply():
    """The hostname as CONNECT_GET_HOSTNAME's reply carries it (length word,
    bytes, padding): long enough that ciphertext holds it only by a chance
    too small to matter, even for a 2-letter hostname such as "vm"."""
    h = socket.gethostname().encode()
    return struct.pack(">I", len(h)) + h + b"\0" * (-len(h) % 4)


class SaslTest(SaslTestCase):
    def test_virsh_digest_md5_over_tcp_with_a_security_layer(self):
        d = self.sasl_daemon()
        relay = Relay(d.port)
        try:
            uri = f"sim+tcp://127.0.0.1:{relay.port}/system"
            _, out, _ = virsh_env(uri, "hostname", env={"LIBVIRT_AUTH_FILE": self.authfile})
            self.assertEqual(out.strip(), socket.gethostname())
            _, caps, _ = virsh_env(uri, "capabilities",
                                   env={"LIBVIRT_AUTH_FILE": self.authfile})
        finally:
            captured = relay.stop()
        self.assertIn("<emulator>ferry-vmm</emulator>", caps)
        # The exchange itself is clear text; everything after it is not.
        self.assertIn(b"DIGEST-MD5", captured)
        self.assertNotIn(xdr_hostname_reply(), captured)
        self.assertNotIn(b"ferry-vmm", captured)
        self.assertNotIn(b"sim:///system", captured)
        self.wait_log(d, "authenticated as 'alice' with SASL DIGEST-MD5 (SSF ")
        self.assertIn("security layer on", d.log())

    def test_the_relay_sees_plain_text_without_sasl(self):
        # Control for the test above: the same capture over auth_tcp = "none".
        d = self.start_daemon()
        relay = Relay(d.port)
        try:
            _, out, _ = ft.virsh(f"sim+tcp://127.0.0.1:{relay.port}/system", "hostname")
        finally:
            captured = relay.stop()
        self.assertIn(xdr_hostname_reply(), captured)

    def test_virsh_scram_sha_256_over_tls(self):
        d = self.sasl_daemon()
        uri = self.tls_uri(d, self.pki.client_dir())
        _, out, _ = virsh_env(uri, "hostname", env={"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertEqual(out.strip(), socket.gethostname())
        self.wait_log(d, "authenticated as 'alice' with SASL SCRAM-SHA-256 (SSF 0)")

    def test_plain_tcp_offers_only_mechanisms_with_a_layer(self):
        d = self.sasl_daemon()
        c = ft.RawClient(d)
        hdr, body = c.call(AUTH_LIST)
        self.assertEqual(body, struct.pack(">II", 1, 1))  # [SASL]
        mechs, hdr, _ = self.raw_sasl_start(c)
        self.assertEqual(mechs, "DIGEST-MD5")
        c.close()

    def test_wrong_password_is_refused_and_logged(self):
        d = self.sasl_daemon()
        bad = self.write_authfile("bad.conf", "alice", "wrong")
        rc, _, err = virsh_env(f"sim+tcp://127.0.0.1:{d.port}/system", "hostname",
                               env={"LIBVIRT_AUTH_FILE": bad}, check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("authentication failed: authentication failed", err)
        self.wait_log(d, "authentication failed for 127.0.0.1:")
        self.assertRegex(d.log(), r"authentication failed for 127\.0\.0\.1:\d+ \(user 'alice', "
                                  r"mechanism DIGEST-MD5\)")
        # Over TLS with SCRAM, and with ferry's client: the same error.
        rc, _, err = probe(self.tls_uri(d, self.pki.client_dir()), "--authfile", bad,
                           check=False)
        self.assertEqual(rc, 1)
        self.assertIn("authentication failed: authentication failed", err)

    def test_repeated_failures_are_slowed_down(self):
        d = self.sasl_daemon()
        times = []
        for _ in range(4):
            c = ft.RawClient(d, timeout=30)
            _, hdr, body = self.raw_sasl_start(c)
            self.assertEqual(hdr[5], ft.OK)  # the challenge
            t0 = time.monotonic()
            hdr, body = c.call(AUTH_SASL_STEP, struct.pack(">i", 0) + xdr_opaque_chars(b"junk"))
            times.append(time.monotonic() - t0)
            self.assertEqual(hdr[5], ft.ERROR)
            self.assertEqual(ft.decode_error(body)[0], 45)  # VIR_ERR_AUTH_FAILED
            self.assertEqual(ft.decode_error(body)[2],
                             "authentication failed: authentication failed")
            c.close()
        # 250 ms from the second failure, doubled per failure, capped at 5 s.
        self.assertGreater(times[1], 0.2)
        self.assertGreater(times[3], 0.9)
        self.assertLess(times[0], times[3] - 0.5)
        self.assertIn("answer delayed", d.log())
        # A good login from that address still works, and resets the count.
        _, out, _ = virsh_env(f"sim+tcp://127.0.0.1:{d.port}/system", "hostname",
                              env={"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertEqual(out.strip(), socket.gethostname())

    def test_nothing_but_auth_before_authentication(self):
        d = self.sasl_daemon()
        c = ft.RawClient(d)
        for proc, payload in ((CONNECT_OPEN, struct.pack(">I", 1) + xdr_string("sim:///system")
                               + struct.pack(">I", 0)), (GET_HOSTNAME, b""), (3, b"")):
            hdr, body = c.call(proc, payload)
            self.assertEqual(hdr[5], ft.ERROR)
            code, _, msg = ft.decode_error(body)
            self.assertEqual(code, 39)
            self.assertIn("authentication required", msg)
        c.close()
        rc, _, err = virsh_env(f"sim+tcp://127.0.0.1:{d.port}/system", "hostname",
                               env={"LIBVIRT_AUTH_FILE": "/nonexistent"}, check=False)
        self.assertNotEqual(rc, 0)

    def test_sasl_allowed_username_list(self):
        d = self.sasl_daemon(extra='sasl_allowed_username_list = ["ali*", "carol"]\n')
        uri = self.tls_uri(d, self.pki.client_dir())
        _, out, _ = virsh_env(uri, "hostname", env={"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertEqual(out.strip(), socket.gethostname())
        bob = self.write_authfile("bob.conf", "bob", "secret2")
        rc, _, err = virsh_env(uri, "hostname", env={"LIBVIRT_AUTH_FILE": bob}, check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("authentication failed", err)
        self.wait_log(d, "user 'bob' is not in sasl_allowed_username_list")

    def test_ferry_client_tls_and_sasl_with_an_auth_file(self):
        d = self.sasl_daemon()
        uri = self.tls_uri(d, self.pki.client_dir())
        # LIBVIRT_AUTH_FILE, as virsh reads it.
        _, out, _ = probe(uri, env={"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertEqual(out.strip(), socket.gethostname())
        # $XDG_CONFIG_HOME/libvirt/auth.conf with [auth-libvirt-default].
        xdg = tempfile.mkdtemp(prefix="xdg-", dir=self.sasl_dir)
        os.makedirs(os.path.join(xdg, "libvirt"))
        with open(os.path.join(xdg, "libvirt", "auth.conf"), "w") as f:
            f.write("[credentials-c]\nauthname=alice\npassword=secret1\n"
                    "[auth-libvirt-default]\ncredentials=c\n")
        _, out, _ = probe(uri, "secure", env={"XDG_CONFIG_HOME": xdg})
        self.assertEqual(out.strip(), "1")
        # The URI's authfile= and auth=sasl.MECH.
        _, out, _ = probe(uri + f"&authfile={self.authfile}&auth=sasl.DIGEST-MD5")
        self.assertEqual(out.strip(), socket.gethostname())
        self.wait_log(d, "with SASL DIGEST-MD5")
        # No credentials at all: the error says where it looked.
        rc, _, err = probe(uri, env={"LIBVIRT_AUTH_FILE": "/nonexistent/auth.conf"},
                           check=False)
        self.assertEqual(rc, 1)
        self.assertIn("cannot read auth file /nonexistent/auth.conf", err)

    def test_sasl_on_the_unix_socket(self):
        d = self.sasl_daemon(extra='auth_unix_rw = "sasl"\n')
        authfile = os.path.join(self.sasl_dir, "default.conf")
        with open(authfile, "w") as f:
            f.write("[credentials-c]\nauthname=alice\npassword=secret1\n"
                    "[auth-libvirt-default]\ncredentials=c\n")
        _, out, _ = virsh_env(d.unix_uri, "hostname", env={"LIBVIRT_AUTH_FILE": authfile})
        self.assertEqual(out.strip(), socket.gethostname())
        self.wait_log(d, "unix peer")
        self.assertRegex(d.log(), r"unix peer .* authenticated as 'alice'")
        # Without credentials: refused; the read-only socket keeps auth_unix_ro = "none".
        rc, _, _ = virsh_env(d.unix_uri, "hostname", env={"LIBVIRT_AUTH_FILE": "/nonexistent"},
                             check=False)
        self.assertNotEqual(rc, 0)
        _, out, _ = virsh_env(f"sim+unix:///system?socket={d.sock_ro}", "hostname")
        self.assertEqual(out.strip(), socket.gethostname())

    def test_ferry_client_digest_md5_over_tcp(self):
        d = self.sasl_daemon()
        _, out, _ = probe(f"sim+tcp://127.0.0.1:{d.port}/system", "secure",
                          env={"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertEqual(out.strip(), "1")  # the SASL layer makes plain TCP secure
        self.wait_log(d, "security layer on")


# ---- read-only ----

READONLY_PROBE = r"""
import json, sys, libvirt
conn = libvirt.open(sys.argv[1])   # the client believes it may write; the server decides
out = {"hostname": conn.getHostname(), "domains": [d.name() for d in conn.listAllDomains()]}
try:
    conn.defineXML(sys.argv[2])
    out["define"] = "allowed"
except libvirt.libvirtError as e:
    out["define"] = [e.get_error_code(), str(e)]
print(json.dumps(out))
"""

# Names of procedures that change something (libvirt's read-only checks).
WRITE_NAME = re.compile(
    r"(DEFINE|CREATE|UNDEFINE|DESTROY|SUSPEND|RESUME|SHUTDOWN|REBOOT|RESET|_SET_|"
    r"MIGRATE_(PREPARE|PERFORM|FINISH|CONFIRM|BEGIN)|ABORT_JOB|SAVE|RESTORE|CORE_DUMP|"
    r"ATTACH|DETACH|UPDATE_DEVICE|SEND_KEY|INJECT_NMI|PM_|BLOCK_(JOB_ABORT|COMMIT|COPY|PULL|"
    r"REBASE|RESIZE)|REVERT|DELETE|RENAME|FS_(FREEZE|THAW|TRIM)|OPEN_(CONSOLE|CHANNEL|"
    r"GRAPHICS)|AGENT_SET|SCREENSHOT|MEMORY_PEEK|BLOCK_PEEK)")
READ_NAME = re.compile(r"(_GET_|LOOKUP|LIST|NUM_OF|_IS_|EVENT|HAS_|SUPPORTS|CLOSE_CALLBACK|"
                       r"SNAPSHOT_NUM|^AUTH_|^CONNECT_OPEN$|^CONNECT_CLOSE$)")


def procedure_names():
    names = {}
    with open(os.path.join(SOURCE, "src/remote/remote_protocol.x")) as f:
        for m in re.finditer(r"REMOTE_PROC_(\w+)\s*=\s*(\d+)", f.read()):
            names[int(m.group(2))] = m.group(1)
    return names


class ReadOnlyTest(ft.DaemonTestCase):
    def test_read_only_socket_queries_but_cannot_define(self):
        d = self.start_daemon()
        import json
        out = json.loads(run(["/usr/bin/python3", "-c", READONLY_PROBE,
                              f"sim+unix:///system?socket={d.sock_ro}", DOMAIN_XML]))
        self.assertEqual(out["hostname"], socket.gethostname())
        self.assertEqual(out["domains"], [])
        code, msg = out["define"]
        self.assertEqual(code, 29)  # VIR_ERR_OPERATION_DENIED
        self.assertIn("read only access prevents", msg)

    def test_read_only_flag_of_connect_open(self):
        d = self.start_daemon()
        rc, _, err = probe(d.tcp_uri, "--readonly", "define", check=False)
        self.assertEqual(rc, 1)
        self.assertIn("operation forbidden: read only access prevents DOMAIN_DEFINE_XML", err)
        _, out, _ = probe(d.tcp_uri, "--readonly", "hostname")
        self.assertEqual(out.strip(), socket.gethostname())

    def test_every_changing_procedure_is_refused_on_a_read_only_connection(self):
        """Sends every procedure number (empty arguments) on a read-only connection: the
        read-only check comes before argument decoding, so the refusals show exactly
        which procedures the table flags PROC_WRITE. Procedures added later (migration)
        are checked too, by name."""
        d = self.start_daemon()
        names = procedure_names()
        c = ft.RawClient(d)
        hdr, body = c.call(CONNECT_OPEN, struct.pack(">I", 1) + xdr_string("sim:///system")
                           + struct.pack(">I", 1))  # flags: read-only
        self.assertEqual(hdr[5], ft.OK)
        implemented, refused = set(), set()
        for proc in sorted(names):
            if proc in (CONNECT_OPEN, 2):  # CONNECT_CLOSE would end the session
                continue
            hdr, body = c.call(proc, b"")
            if hdr[5] == ft.OK:
                implemented.add(proc)
                continue
            code, _, msg = ft.decode_error(body)
            if msg.startswith("unknown procedure"):
                continue
            implemented.add(proc)
            if code == 29:
                self.assertIn("read only access prevents " + names[proc], msg)
                refused.add(proc)
        c.close()
        self.assertIn(10, refused)  # DOMAIN_DEFINE_XML
        for proc in implemented:
            name = names[proc]
            if READ_NAME.search(name):
                self.assertNotIn(proc, refused, f"{name} reads, yet is refused read-only")
            elif WRITE_NAME.search(name):
                self.assertIn(proc, refused, f"{name} changes something: flag it PROC_WRITE")

    def test_secure_xml_needs_write_access(self):
        d = self.start_daemon()
        c = ft.RawClient(d)
        c.call(CONNECT_OPEN, struct.pack(">I", 1) + xdr_string("sim:///system")
               + struct.pack(">I", 1))
        dom = xdr_string("x") + b"\x01" * 16 + struct.pack(">i", -1)
        hdr, body = c.call(DOMAIN_GET_XML_DESC, dom + struct.pack(">I", 1))  # VIR_DOMAIN_XML_SECURE
        self.assertEqual(hdr[5], ft.ERROR)
        code, _, msg = ft.decode_error(body)
        self.assertEqual(code, 29)
        self.assertIn("VIR_DOMAIN_XML_SECURE", msg)
        c.close()


class TlsReadOnlyTest(PkiTestCase):
    def test_read_only_over_tls(self):
        d = self.tls_daemon()
        uri = self.tls_uri(d, self.pki.client_dir())
        _, out, _ = ft.virsh(uri, "--readonly", "list", "--all")
        self.assertRegex(out, r"Id\s+Name\s+State")
        rc, _, err = probe(uri, "--readonly", "define", check=False)
        self.assertEqual(rc, 1)
        self.assertIn("read only access prevents", err)



# ---- migration over TLS + SASL: the tunnel is encrypted ----

M64 = (1 << 64) - 1


def _mix(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def guest_page0_prefix(seed, words=8):
    """The first bytes of a ferry-vmm guest's RAM, as its seeded fill writes them
    (src/vmm/vmm-prng.h, fill block 0): real guest memory to look for on the wire."""
    state = _mix(seed ^ _mix(0))
    out = b""
    for _ in range(words):
        state = (state + 0xA0761D6478BD642F) & M64
        t = state * (state ^ 0xE7037ED1A0B428DB)
        out += (((t >> 64) ^ t) & M64).to_bytes(8, "little")
    return out


# The first 8 bytes of every page batch header of ferry-vmm's migration stream
# (src/vmm/vmm-wire.h): "FMIG", type 2, reserved 0. 8 bytes, so random
# ciphertext of 40 MiB holds them by chance once in about 4e11 runs (the
# 4-byte "FMIG" alone: once in about 100).
VMM_PAGES_HEADER = b"FMIG\x02\x00\x00\x00"


class MigrationEncryptionTest(SaslTestCase):
    SEED = 4242

    def migrate_through_relay(self, dest, dest_port, uri_scheme, src_conf, src_env):
        src = self.start_daemon(extra_conf=src_conf, env=src_env)
        xml = ft.write_file(src.dir, "vm.xml", ft.domain_xml("secret-vm", memory_mib=32,
                                                              seed=self.SEED))
        ft.virsh(src.tcp_uri, "define", xml)
        ft.virsh(src.tcp_uri, "start", "secret-vm")
        relay = Relay(dest_port)
        try:
            duri = f"{uri_scheme}://127.0.0.1:{relay.port}/system"
            rc, _, err = ft.virsh(src.tcp_uri, "migrate", "--live", "--p2p", "--tunnelled",
                                  "secret-vm", duri, check=False, timeout=180)
        finally:
            captured = relay.stop()
        self.assertEqual(rc, 0, err)
        self.assertIn("secret-vm", ft.virsh(dest.unix_uri, "list", "--name")[1])
        ft.virsh(dest.unix_uri, "destroy", "secret-vm")
        return captured

    def test_auth_file_errors_never_quote_its_content(self):
        src = self.start_daemon(env={"LIBVIRT_AUTH_FILE": "/etc/passwd"})
        dest = self.sasl_daemon()
        ft.virsh(src.tcp_uri, "define", ft.write_file(src.dir, "v.xml", ft.domain_xml("vm1")))
        ft.virsh(src.tcp_uri, "start", "vm1")
        rc, _, err = ft.virsh(src.tcp_uri, "migrate", "--live", "--p2p", "vm1", dest.tcp_uri,
                              check=False, timeout=60)
        self.assertNotEqual(rc, 0)
        self.assertIn("cannot read auth file /etc/passwd: it is not in the key file format", err)
        self.assertNotIn("root:", err)

    def test_guest_memory_is_visible_on_plain_tcp(self):
        dest = self.start_daemon()
        captured = self.migrate_through_relay(dest, dest.port, "sim+tcp", "", None)
        self.assertGreater(len(captured), 32 << 20)
        self.assertIn(guest_page0_prefix(self.SEED), captured)
        self.assertIn(VMM_PAGES_HEADER, captured)  # the marker the TLS test looks for

    def test_guest_memory_is_not_visible_over_tls_and_sasl(self):
        dest = self.sasl_daemon()
        pkidir = self.pki.client_dir()
        captured = self.migrate_through_relay(dest, dest.tls_port, "sim+tls",
                                              f'migration_pki_dir = "{pkidir}"\n',
                                              {"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertGreater(len(captured), 32 << 20)
        self.assertNotIn(guest_page0_prefix(self.SEED), captured)
        self.assertNotIn(guest_page0_prefix(self.SEED)[:16], captured)
        self.assertNotIn(VMM_PAGES_HEADER, captured)  # not even the VMM's framing
        self.assertNotIn(b"secret-vm", captured)


class ResumeIdentityTest(SaslTestCase):
    """A tunnelled migration whose connection broke may only be resumed by
    the identity that prepared it: the token alone is not enough. The
    destination runs in a network namespace of the test's own, and the
    break is a real blip: every packet dropped by iptables inside it for
    longer than tcp_user_timeout (5 s), so both daemons see their
    connection time out, as after a network outage, and the source
    reconnects once the link is back."""

    def test_resume_as_another_sasl_user_is_refused(self):
        net = ft.Netns()
        self.addCleanup(net.close)
        dest = self.start_daemon(name="destination", host=net.dst_ip, prefix=net.prefix,
                                 extra_conf='auth_tcp = "sasl"\n',
                                 env={"SASL_CONF_PATH": self.sasl_dir})
        authfile = self.write_authfile("resume-as.conf", "alice", "secret1", host=net.dst_ip)
        src = self.start_daemon(name="source", host=net.src_ip,
                                env={"LIBVIRT_AUTH_FILE": authfile})
        ft.virsh(src.tcp_uri, "define", ft.write_file(src.dir, "vm.xml", ft.domain_xml(
            "vm1", memory_mib=96, dirty_rate="4MiB")))
        ft.virsh(src.tcp_uri, "start", "vm1")
        ft.virsh(src.tcp_uri, "migrate-setspeed", "vm1", "8")
        p = ft.start_migration(src, dest, "vm1", "--live")
        try:
            self.assertTrue(ft.wait_data_processed(src, "vm1", 8 << 20, timeout=90))
            # The daemon's credentials change; then the link is down for
            # 7 s: the connection breaks and the source comes back as bob.
            self.write_authfile("resume-as.conf", "bob", "secret2", host=net.dst_ip)
            net.blip(7.0)
            _, err = p.communicate(timeout=120)
        finally:
            net.heal()
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("could not be resumed", err)
        self.assertRegex(err, r"the resumed connection authenticated as SASL \S+ user 'bob', "
                              r"the migration's as SASL \S+ user 'alice'")
        self.assertRegex(ft.domstate(src, "vm1"), r"^running")
        self.assertIn("refused to resume a migration stream", dest.log())
        self.assertTrue(ft.wait_for(
            lambda: "dropping the incoming VM of domain 'vm1'" in dest.log(), 60))


class ProxyTlsTest(PkiTestCase):
    """virsh migrate --p2p --tls: proxy mode with an encrypted data connection."""

    def test_proxy_mode_data_connection_over_tls(self):
        dest = self.tls_daemon()
        src = self.start_daemon(extra_conf=f'migration_pki_dir = "{self.pki.client_dir()}"\n')
        ft.virsh(src.tcp_uri, "define", ft.write_file(src.dir, "v.xml", ft.domain_xml("vm1", seed=7)))
        ft.virsh(src.tcp_uri, "start", "vm1")
        duri = f"sim+tls://127.0.0.1:{dest.tls_port}/system"
        rc, _, err = ft.virsh(src.tcp_uri, "migrate", "--live", "--p2p", "--tls", "vm1", duri,
                              check=False, timeout=180)
        self.assertEqual(rc, 0, err)
        self.assertIn("vm1", ft.virsh(dest.unix_uri, "list", "--name")[1])
        self.assertRegex(dest.log(), r"data connection for the migration of domain 'vm1' from "
                                     r"127\.0\.0\.1:\d+ accepted \(TLS\)")
        ft.virsh(dest.unix_uri, "destroy", "vm1")

    def test_destination_uri_naming_local_files_is_refused(self):
        """The daemon connects with its own files: a client's dconnuri may not
        point it at others (it would read them, or a socket, as root)."""
        src = self.start_daemon()
        ft.virsh(src.tcp_uri, "define", ft.write_file(src.dir, "v.xml", ft.domain_xml("vm1")))
        ft.virsh(src.tcp_uri, "start", "vm1")
        for param, value in [("authfile", "/etc/shadow"), ("pkipath", "/root/.pki/libvirt"),
                             ("socket", "/run/other.sock"), ("keyfile", "/root/.ssh/id_rsa"),
                             ("known_hosts", "/x"), ("command", "/bin/sh"), ("netcat", "nc")]:
            duri = f"sim+tls://127.0.0.1:1/system?no_verify=1&{param}={value}"
            rc, _, err = ft.virsh(src.tcp_uri, "migrate", "--live", "--p2p", "vm1", duri,
                                  check=False, timeout=60)
            self.assertNotEqual(rc, 0)
            self.assertIn(f"operation forbidden: the destination URI parameter '{param}' names a "
                          "file, socket or command on this host, which a client may not choose",
                          err)
        # %-escaped names are the same parameter.
        rc, _, err = ft.virsh(src.tcp_uri, "migrate", "--live", "--p2p", "vm1",
                              "sim+tcp://127.0.0.1:1/system?auth%66ile=/etc/shadow",
                              check=False, timeout=60)
        self.assertIn("parameter 'authfile' names a file", err)
        self.assertRegex(ft.virsh(src.tcp_uri, "domstate", "vm1")[1], r"running")

    def test_tls_data_connection_needs_certificates_on_the_destination(self):
        dest = self.start_daemon(extra_conf='cert_file = "/nonexistent/servercert.pem"\n')
        src = self.start_daemon()
        ft.virsh(src.tcp_uri, "define", ft.write_file(src.dir, "v.xml", ft.domain_xml("vm1")))
        ft.virsh(src.tcp_uri, "start", "vm1")
        rc, _, err = ft.virsh(src.tcp_uri, "migrate", "--live", "--p2p", "--tls", "vm1",
                              dest.tcp_uri, check=False, timeout=180)
        self.assertNotEqual(rc, 0)
        self.assertIn("no TLS certificate for encrypted migration data", err)
        self.assertRegex(ft.virsh(src.tcp_uri, "domstate", "vm1")[1], r"running")


if __name__ == "__main__":
    unittest.main()
