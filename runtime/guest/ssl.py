"""TLS for the eryx sandbox, in place of the standard ssl module.

WASI has no OpenSSL (no _ssl), so the stdlib's ssl cannot load. This module
shadows it with the part of its API that http.client, urllib.request and
common HTTP libraries use, while the TLS itself runs on the host:
SSLContext.wrap_socket asks the network gateway to upgrade the connection
(Go's crypto/tls, verifying against the host's trust store plus the
operator's extra CAs and any CA data the context loaded), and the socket
then carries plaintext between Python and the host.

Importing always works, so http.client and urllib import as usual; without
a network gateway for the execution, creating a context raises
_eryx_net.NetworkPolicyError (a PermissionError) saying networking is off.

Not available: server-side TLS, client certificates, wrap_bio/SSLObject/
MemoryBIO, unwrap(), sessions, and cipher selection (the host picks secure
suites; TLS 1.2 is the minimum).
"""

import base64 as _base64
import enum as _enum
import os as _os
from collections import namedtuple as _namedtuple

import _eryx_net
import socket as _socket
from socket import SOCK_STREAM, SOL_SOCKET, SO_TYPE  # noqa: F401 - as the stdlib exports

OPENSSL_VERSION = "eryx host TLS (Go crypto/tls)"
OPENSSL_VERSION_INFO = (3, 0, 0, 0, 0)  # a feature level, not a library
OPENSSL_VERSION_NUMBER = 0x30000000
_OPENSSL_API_VERSION = OPENSSL_VERSION_INFO
_DEFAULT_CIPHERS = "DEFAULT"

HAS_SNI = True
HAS_ALPN = True
HAS_NPN = False
HAS_ECDH = True
HAS_NEVER_CHECK_COMMON_NAME = True
HAS_SSLv2 = HAS_SSLv3 = HAS_TLSv1 = HAS_TLSv1_1 = False
HAS_TLSv1_2 = HAS_TLSv1_3 = True
CHANNEL_BINDING_TYPES = []

socket_error = OSError


# ---- exceptions --------------------------------------------------------------------


class SSLError(OSError):
    """A TLS failure, reported by the host's TLS stack."""

    library = "SSL"
    reason = None

    def __str__(self):
        if len(self.args) >= 2 and isinstance(self.args[1], str):
            return self.args[1]
        return super().__str__()


class SSLZeroReturnError(SSLError):
    """The TLS connection was closed cleanly."""


class SSLWantReadError(SSLError):
    """Non-blocking TLS needs more data (never raised: sockets block)."""


class SSLWantWriteError(SSLError):
    """Non-blocking TLS needs to write (never raised: sockets block)."""


class SSLSyscallError(SSLError):
    """A system error under the TLS layer."""


class SSLEOFError(SSLError):
    """The peer closed the connection in violation of the TLS protocol."""


class SSLCertVerificationError(SSLError, ValueError):
    """The server's certificate or name could not be verified."""

    verify_code = 1
    verify_message = ""


CertificateError = SSLCertVerificationError

# OpenSSL's verification texts, which the host reproduces, and their codes.
_VERIFY_CODES = {
    "certificate is not yet valid": 9,
    "certificate has expired": 10,
    "self-signed certificate": 18,
    "unable to get local issuer certificate": 20,
}


def _error_from_host(cls, message):
    """Builds the exception for a host TLS error (used by _eryx_net)."""
    code = {SSLEOFError: 8, SSLZeroReturnError: 6, SSLSyscallError: 5}.get(cls, 1)
    exc = cls(code, message)
    if message.startswith("[") and "]" in message:
        tag = message[1:message.index("]")]
        exc.library, _, reason = tag.partition(": ")
        exc.reason = reason or None
    if isinstance(exc, SSLCertVerificationError):
        detail = message.partition("certificate verify failed: ")[2]
        detail = detail.rsplit(" (", 1)[0] if detail.endswith(")") else detail
        exc.verify_message = detail
        if detail.startswith("Hostname mismatch"):
            exc.verify_code = 62
        elif detail.startswith("IP address mismatch"):
            exc.verify_code = 64
        else:
            exc.verify_code = _VERIFY_CODES.get(detail, 1)
    return exc


# ---- constants ---------------------------------------------------------------------


class VerifyMode(_enum.IntEnum):
    CERT_NONE = 0
    CERT_OPTIONAL = 1
    CERT_REQUIRED = 2


CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED = VerifyMode.CERT_NONE, VerifyMode.CERT_OPTIONAL, VerifyMode.CERT_REQUIRED


class VerifyFlags(_enum.IntFlag):
    VERIFY_DEFAULT = 0
    VERIFY_CRL_CHECK_LEAF = 0x4
    VERIFY_CRL_CHECK_CHAIN = 0xC
    VERIFY_X509_STRICT = 0x20
    VERIFY_ALLOW_PROXY_CERTS = 0x40
    VERIFY_X509_TRUSTED_FIRST = 0x8000
    VERIFY_X509_PARTIAL_CHAIN = 0x80000


globals().update(VerifyFlags.__members__)


class _SSLMethod(_enum.IntEnum):
    PROTOCOL_TLS = 2
    PROTOCOL_SSLv23 = 2  # the old name of PROTOCOL_TLS
    PROTOCOL_TLS_CLIENT = 16
    PROTOCOL_TLS_SERVER = 17


PROTOCOL_TLS = PROTOCOL_SSLv23 = _SSLMethod.PROTOCOL_TLS
PROTOCOL_TLS_CLIENT = _SSLMethod.PROTOCOL_TLS_CLIENT
PROTOCOL_TLS_SERVER = _SSLMethod.PROTOCOL_TLS_SERVER


class Options(_enum.IntFlag):
    """Accepted for compatibility; only the OP_NO_TLSv1_2/3 bits have an
    effect (they bound the protocol version)."""

    OP_NO_SSLv2 = 0
    OP_LEGACY_SERVER_CONNECT = 0x4
    OP_IGNORE_UNEXPECTED_EOF = 0x80
    OP_ALL = 0x80000850
    OP_NO_TICKET = 0x4000
    OP_NO_COMPRESSION = 0x20000
    OP_ENABLE_MIDDLEBOX_COMPAT = 0x100000
    OP_CIPHER_SERVER_PREFERENCE = 0x400000
    OP_NO_SSLv3 = 0x2000000
    OP_NO_TLSv1 = 0x4000000
    OP_NO_TLSv1_2 = 0x8000000
    OP_NO_TLSv1_1 = 0x10000000
    OP_NO_TLSv1_3 = 0x20000000
    OP_NO_RENEGOTIATION = 0x40000000


globals().update(Options.__members__)
OP_SINGLE_DH_USE = OP_SINGLE_ECDH_USE = Options.OP_NO_SSLv2  # no-ops in OpenSSL 3 too


class TLSVersion(_enum.IntEnum):
    MINIMUM_SUPPORTED = -2
    MAXIMUM_SUPPORTED = -1
    SSLv3 = 0x300
    TLSv1 = 0x301
    TLSv1_1 = 0x302
    TLSv1_2 = 0x303
    TLSv1_3 = 0x304


class Purpose(_enum.Enum):
    """What a context's certificates are for (the values are the OIDs)."""

    SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
    CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"


DefaultVerifyPaths = _namedtuple("DefaultVerifyPaths",
                                 "cafile capath openssl_cafile_env openssl_cafile openssl_capath_env openssl_capath")


def get_default_verify_paths():
    """The host's trust store is not visible in the sandbox."""
    return DefaultVerifyPaths(None, None, "SSL_CERT_FILE", "", "SSL_CERT_DIR", "")


# ---- certificates ------------------------------------------------------------------

PEM_HEADER = "-----BEGIN CERTIFICATE-----"
PEM_FOOTER = "-----END CERTIFICATE-----"


def DER_cert_to_PEM_cert(der_cert_bytes):
    body = _base64.standard_b64encode(bytes(der_cert_bytes)).decode("ascii")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return PEM_HEADER + "\n" + "\n".join(lines) + "\n" + PEM_FOOTER + "\n"


def PEM_cert_to_DER_cert(pem_cert_string):
    text = pem_cert_string.strip()
    if not text.startswith(PEM_HEADER) or not text.endswith(PEM_FOOTER):
        raise ValueError(f"Invalid PEM encoding; must start with {PEM_HEADER!r} and end with {PEM_FOOTER!r}")
    return _base64.decodebytes(text[len(PEM_HEADER):-len(PEM_FOOTER)].encode("ascii"))


def _split_der(data):
    """Splits concatenated DER certificates (each an ASN.1 SEQUENCE)."""
    out, i = [], 0
    while i < len(data):
        if data[i] != 0x30 or i + 2 > len(data):
            raise SSLError(1, "[X509: NOT_A_CERTIFICATE] cadata is not DER-encoded certificates")
        n = data[i + 1]
        if n < 0x80:
            head, length = 2, n
        else:
            k = n & 0x7F
            head, length = 2 + k, int.from_bytes(data[i + 2:i + 2 + k], "big")
        end = i + head + length
        if end > len(data):
            raise SSLError(1, "[X509: NOT_A_CERTIFICATE] truncated DER certificate in cadata")
        out.append(data[i:end])
        i = end
    return out


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def cert_time_to_seconds(cert_time):
    """Parses a certificate time such as "May  9 00:00:00 2027 GMT"."""
    import calendar

    parts = cert_time.split()
    if len(parts) != 5 or parts[4] != "GMT" or parts[0] not in _MONTHS:
        raise ValueError(f"time data {cert_time!r} does not match format '%b %d %H:%M:%S %Y GMT'")
    hh, mm, ss = (int(x) for x in parts[2].split(":"))
    return calendar.timegm((int(parts[3]), _MONTHS.index(parts[0]) + 1, int(parts[1]), hh, mm, ss))


def RAND_bytes(n):
    return _os.urandom(n)


def RAND_status():
    return True


def RAND_add(string, entropy):
    pass


# ---- contexts ----------------------------------------------------------------------

_MAX_CADATA = 1 << 20  # the host's limit too


class SSLContext:
    """Client TLS settings; the handshake itself happens on the host."""

    sslsocket_class = None  # set below
    sslobject_class = None

    def __init__(self, protocol=None, *args, **kwargs):
        if not _eryx_net.enabled():
            raise _eryx_net.refuse_locally("ssl", _eryx_net.disabled_reason() + ", so TLS is unavailable")
        self.protocol = _SSLMethod(PROTOCOL_TLS if protocol is None else protocol)
        client = self.protocol == PROTOCOL_TLS_CLIENT
        self._check_hostname = client
        self._verify_mode = CERT_REQUIRED if client else CERT_NONE
        self.options = Options.OP_ALL | Options.OP_NO_SSLv3 | Options.OP_NO_COMPRESSION
        self.verify_flags = VerifyFlags.VERIFY_X509_TRUSTED_FIRST
        self.minimum_version = TLSVersion.MINIMUM_SUPPORTED
        self.maximum_version = TLSVersion.MAXIMUM_SUPPORTED
        # None tells http.client that post-handshake auth is unsupported.
        self.post_handshake_auth = None
        self.hostname_checks_common_name = False
        self.keylog_filename = None
        self.sni_callback = None
        self.security_level = 2
        self.num_tickets = 2
        self._alpn = None
        self._cadata = []

    @property
    def check_hostname(self):
        return self._check_hostname

    @check_hostname.setter
    def check_hostname(self, value):
        value = bool(value)
        if value and self._verify_mode == CERT_NONE:
            self._verify_mode = CERT_REQUIRED  # as the stdlib does
        self._check_hostname = value

    @property
    def verify_mode(self):
        return self._verify_mode

    @verify_mode.setter
    def verify_mode(self, value):
        value = VerifyMode(value)
        if value == CERT_NONE and self._check_hostname:
            raise ValueError("Cannot set verify_mode to CERT_NONE when check_hostname is enabled.")
        self._verify_mode = value

    def load_verify_locations(self, cafile=None, capath=None, cadata=None):
        """Trusts more CAs for this context's connections, in addition to
        the host's trust store (which is always used)."""
        if cafile is None and capath is None and cadata is None:
            raise TypeError("cafile, capath and cadata cannot be all omitted")
        pems = []
        if cafile is not None:
            with open(_os.fspath(cafile), "rb") as f:
                pems.append(f.read().decode("latin-1"))
        if capath is not None:
            for name in sorted(_os.listdir(capath)):
                path = _os.path.join(capath, name)
                if _os.path.isfile(path):
                    with open(path, "rb") as f:
                        text = f.read().decode("latin-1")
                    if PEM_HEADER in text:
                        pems.append(text)
        if cadata is not None:
            if isinstance(cadata, str):
                pems.append(cadata)
            else:
                pems.extend(DER_cert_to_PEM_cert(c) for c in _split_der(bytes(cadata)))
        for text in pems:
            if PEM_HEADER not in text:
                raise SSLError(1, "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found")
        if sum(map(len, self._cadata + pems)) > _MAX_CADATA:
            raise ValueError(f"eryx: CA data above {_MAX_CADATA} bytes")
        self._cadata.extend(pems)

    def load_default_certs(self, purpose=Purpose.SERVER_AUTH):
        pass  # the host's trust store is always in use

    def set_default_verify_paths(self):
        pass

    def load_cert_chain(self, certfile, keyfile=None, password=None):
        raise NotImplementedError("eryx: client certificates are not supported by the sandbox's TLS")

    def set_ciphers(self, ciphers):
        pass  # the host chooses among secure suites

    def get_ciphers(self):
        return []

    def set_alpn_protocols(self, alpn_protocols):
        protocols = list(alpn_protocols)
        for p in protocols:
            if not isinstance(p, str) or not 0 < len(p.encode()) < 256:
                raise ValueError(f"invalid ALPN protocol {p!r}")
        self._alpn = protocols

    def set_npn_protocols(self, npn_protocols):
        pass

    def set_ecdh_curve(self, name):
        pass

    def load_dh_params(self, path):
        pass

    def set_servername_callback(self, callback):
        self.sni_callback = callback

    def get_ca_certs(self, binary_form=False):
        return []

    def cert_store_stats(self):
        return {"x509": 0, "crl": 0, "x509_ca": 0}

    def session_stats(self):
        return {}

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, suppress_ragged_eofs=True,
                    server_hostname=None, session=None):
        if server_side:
            raise NotImplementedError("eryx: TLS servers are not available in the sandbox")
        if session is not None:
            raise NotImplementedError("eryx: TLS session reuse is not supported")
        if server_hostname is not None:
            server_hostname = _eryx_net._idna(server_hostname)
            if not server_hostname or server_hostname.startswith("."):
                raise ValueError("server_hostname cannot be an empty string or start with a leading dot.")
        elif self._check_hostname:
            raise ValueError("check_hostname requires server_hostname")
        return self.sslsocket_class._create(sock, self, server_hostname, do_handshake_on_connect, suppress_ragged_eofs)

    def wrap_bio(self, *args, **kwargs):
        raise NotImplementedError("eryx: memory-BIO TLS is not available; TLS runs on the host")

    def _tls_params(self, server_hostname):
        """The host's description of the TLS this context asks for."""
        lo, hi = int(self.minimum_version), int(self.maximum_version)
        if self.options & Options.OP_NO_TLSv1_2:
            lo = max(lo, TLSVersion.TLSv1_3)
        if self.options & Options.OP_NO_TLSv1_3:
            hi = TLSVersion.TLSv1_2 if hi < 0 else min(hi, TLSVersion.TLSv1_2)
        return {
            "server_hostname": server_hostname or "",
            "insecure": self._verify_mode == CERT_NONE,
            "no_check_hostname": not self._check_hostname,
            "alpn": self._alpn,
            "cadata": "".join(self._cadata),
            "min_version": max(lo, 0),
            "max_version": max(hi, 0),
        }


def create_default_context(purpose=Purpose.SERVER_AUTH, *, cafile=None, capath=None, cadata=None):
    """A verifying client context, as the stdlib's."""
    if purpose != Purpose.SERVER_AUTH:
        raise NotImplementedError("eryx: only client (SERVER_AUTH) contexts are available in the sandbox")
    ctx = SSLContext(PROTOCOL_TLS_CLIENT)
    if cafile or capath or cadata:
        ctx.load_verify_locations(cafile, capath, cadata)
    return ctx


def _create_unverified_context(protocol=None, *, cert_reqs=CERT_NONE, check_hostname=False,
                               purpose=Purpose.SERVER_AUTH, certfile=None, keyfile=None,
                               cafile=None, capath=None, cadata=None):
    ctx = SSLContext(PROTOCOL_TLS_CLIENT if protocol is None else protocol)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = cert_reqs
    if certfile or keyfile:
        ctx.load_cert_chain(certfile, keyfile)
    if cafile or capath or cadata:
        ctx.load_verify_locations(cafile, capath, cadata)
    return ctx


_create_default_https_context = create_default_context
_create_stdlib_context = _create_unverified_context


# ---- sockets -----------------------------------------------------------------------


class SSLSocket(_eryx_net.socket):
    """A TLS client socket: the host encrypts, this object sees plaintext."""

    def __init__(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} does not have a public constructor. "
                        "Instances are returned by SSLContext.wrap_socket().")

    @classmethod
    def _create(cls, sock, context, server_hostname, do_handshake_on_connect, suppress_ragged_eofs):
        self = cls.__new__(cls)
        self._adopt(sock)
        # Plaintext read ahead before the upgrade must never pass for data
        # that came over TLS (the STARTTLS injection bug): drop it.
        self._rbuf, self._rpos, self._eof = b"", 0, False
        self._context = context
        self.server_hostname = server_hostname
        self.server_side = False
        self.do_handshake_on_connect = do_handshake_on_connect
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self._tls = None  # the host's description of the session, once established
        if self._id is not None and do_handshake_on_connect:
            self.do_handshake()
        return self

    @property
    def context(self):
        return self._context

    @context.setter
    def context(self, ctx):
        self._context = ctx

    @property
    def session(self):
        return None

    @property
    def session_reused(self):
        return False

    # -- the handshake

    def _tls_request(self):
        # Connecting a wrapped socket does the handshake in the same call.
        if self.do_handshake_on_connect:
            return self._context._tls_params(self.server_hostname)
        return None

    def _connected(self, reply):
        self._tls = reply.get("tls")

    def do_handshake(self, block=False):
        self._check_connected()
        if self._tls is not None:
            return
        doc = {"id": self._id, "timeout": self._timeout}
        doc.update(self._context._tls_params(self.server_hostname))
        self._tls = _eryx_net._call("net.starttls", doc, self._host)

    def _send_chunk(self, chunk):
        self.do_handshake()
        return super()._send_chunk(chunk)

    def _recv_chunk(self, want):
        self.do_handshake()
        try:
            return super()._recv_chunk(want)
        except SSLEOFError:
            if self.suppress_ragged_eofs:
                return b""
            raise

    # -- the stdlib's SSLSocket API

    def read(self, len=1024, buffer=None):
        if buffer is not None:
            return self.recv_into(buffer, len)
        return self.recv(len)

    def write(self, data):
        return self.send(data)

    def pending(self):
        return self._buffered()

    def version(self):
        return self._tls["version"] if self._tls else None

    def cipher(self):
        if not self._tls:
            return None
        return self._tls["cipher"], self._tls["version"], self._tls["bits"]

    def shared_ciphers(self):
        return None

    def compression(self):
        return None

    def selected_alpn_protocol(self):
        return (self._tls or {}).get("alpn") or None

    def selected_npn_protocol(self):
        return None

    def get_channel_binding(self, cb_type="tls-unique"):
        raise ValueError(f"{cb_type!r} channel binding type not implemented")

    def getpeercert(self, binary_form=False):
        """The server's certificate: DER bytes, or (only when it was
        verified, as in CPython) the decoded subset clients use."""
        self._check_connected()
        if self._tls is None:
            raise ValueError("handshake not done yet")
        if binary_form:
            der = self._tls.get("cert_der")
            return _base64.b64decode(der) if der else None
        cert = self._tls.get("cert")
        if not cert:
            return {}
        out = {}
        for key, value in cert.items():
            if key in ("subject", "issuer"):
                value = tuple(tuple(tuple(pair) for pair in rdn) for rdn in value)
            elif key == "subjectAltName":
                value = tuple(tuple(pair) for pair in value)
            out[key] = value
        return out

    def unwrap(self):
        raise NotImplementedError("eryx: unwrapping TLS is not supported")

    def verify_client_post_handshake(self):
        raise NotImplementedError("eryx: post-handshake authentication is not supported")


SSLContext.sslsocket_class = SSLSocket


class SSLObject:
    """Memory-BIO TLS is unavailable: TLS runs on the host."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("eryx: SSLObject is not available; TLS runs on the host")


class MemoryBIO:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("eryx: MemoryBIO is not available; TLS runs on the host")


class SSLSession:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("eryx: TLS sessions are not available")


def wrap_socket(sock, keyfile=None, certfile=None, server_side=False, cert_reqs=CERT_NONE,
                ssl_version=PROTOCOL_TLS, ca_certs=None, do_handshake_on_connect=True,
                suppress_ragged_eofs=True, ciphers=None):
    """The long-deprecated module-level wrap_socket (no verification, like
    the stdlib's default)."""
    ctx = SSLContext(ssl_version)
    ctx.verify_mode = cert_reqs
    if ca_certs:
        ctx.load_verify_locations(ca_certs)
    if certfile or keyfile:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect,
                           suppress_ragged_eofs=suppress_ragged_eofs)


def get_server_certificate(addr, ssl_version=PROTOCOL_TLS_CLIENT, ca_certs=None, timeout=None):
    """The PEM certificate of the server at addr (host, port), unverified."""
    host, port = addr
    ctx = _create_unverified_context(ssl_version, cafile=ca_certs)
    kwargs = {} if timeout is None else {"timeout": timeout}
    with _socket.create_connection(addr, **kwargs) as sock, ctx.wrap_socket(sock, server_hostname=host) as ssock:
        return DER_cert_to_PEM_cert(ssock.getpeercert(True))
