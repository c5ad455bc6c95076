"""Network shims of the eryx sandbox: sockets that live on the host.

WASI gives the interpreter no sockets. This module gives the socket module
a socket class, create_connection, getaddrinfo and friends that forward to
the host's network gateway (netgate, in Go) through host calls. It patches
socket when first imported (ssl imports it, and asyncio imports ssl, so
that happens while the interpreter image is built), with networking off;
before each execution with network options, _eryx calls install(). The host
enforces the operator's policy: which hosts and ports, which address
ranges, how many connections and bytes. This module only translates
between Python's socket API and the gateway's operations, and raises the
exceptions Python code expects. TLS is done on the host as well (see ssl.py,
which shadows the standard ssl module).

The operations, JSON in and out, bytes as base64 (keep in sync with
netgate/wire.go):

    net.resolve   {host, family}                     -> {addresses}
    net.connect   {host, port, family, timeout, tls} -> {id, peer, port, family, tls}
    net.starttls  {id, timeout, server_hostname, insecure, no_check_hostname,
                   alpn, cadata, min_version, max_version}
                                                     -> {version, cipher, bits, alpn, cert, cert_der}
    net.send      {id, data, timeout}                -> {sent}
    net.recv      {id, max, timeout}                 -> {data}   (empty: end of stream)
    net.shutdown  {id, how}                          -> null
    net.close     {id}                               -> null

Only blocking TCP client sockets are provided: no listening, no UDP, no
file descriptors (fileno() is -1, so select() and asyncio's socket
transports cannot use them).
"""

import base64
import errno
import io
import json

import _eryx
import eryx
import socket as _sock

# Bound now: user code may monkeypatch these modules. (Not _eryx's
# functions: asyncio imports ssl, which imports this module, while _eryx
# itself is still importing.)
_dumps = json.dumps
_b64encode = base64.b64encode
_b64decode = base64.b64decode

# The socket module's constants as Linux has them. WASI's _socket numbers
# them its own way (AF_INET 1, SOCK_STREAM 6), and real code passes numbers
# (socket.socket(2, 1)), compares them with numbers, or reads them from
# configuration. _patch() puts these into socket, rebuilds
# socket's enums from them as socket.py does, and removes WASI-only names.
# Generated from CPython 3.11 on Linux, for the names WASI's _socket has
# plus the common socket options it lacks (no AF_UNIX: there are no Unix
# sockets here, and code checks hasattr(socket, "AF_UNIX") to find out).
_LINUX = {
    "AF_INET": 2, "AF_INET6": 10, "AF_UNSPEC": 0, "AI_ADDRCONFIG": 32, "AI_ALL": 16,
    "AI_CANONNAME": 2, "AI_NUMERICHOST": 4, "AI_NUMERICSERV": 1024, "AI_PASSIVE": 1, "AI_V4MAPPED": 8,
    "EAI_ADDRFAMILY": -9, "EAI_AGAIN": -3, "EAI_BADFLAGS": -1, "EAI_FAIL": -4, "EAI_FAMILY": -6,
    "EAI_MEMORY": -10, "EAI_NODATA": -5, "EAI_NONAME": -2, "EAI_SERVICE": -8, "EAI_SOCKTYPE": -7,
    "EAI_SYSTEM": -11, "INADDR_ALLHOSTS_GROUP": 3758096385, "INADDR_ANY": 0, "INADDR_BROADCAST": 4294967295,
    "INADDR_LOOPBACK": 2130706433, "INADDR_MAX_LOCAL_GROUP": 3758096639, "INADDR_NONE": 4294967295,
    "INADDR_UNSPEC_GROUP": 3758096384, "IPPORT_RESERVED": 1024, "IPPORT_USERRESERVED": 5000,
    "IPPROTO_ICMP": 1, "IPPROTO_ICMPV6": 58, "IPPROTO_IP": 0, "IPPROTO_IPV6": 41, "IPPROTO_RAW": 255,
    "IPPROTO_TCP": 6, "IPPROTO_UDP": 17, "IPV6_CHECKSUM": 7, "IPV6_DONTFRAG": 62, "IPV6_DSTOPTS": 59,
    "IPV6_HOPLIMIT": 52, "IPV6_HOPOPTS": 54, "IPV6_JOIN_GROUP": 20, "IPV6_LEAVE_GROUP": 21,
    "IPV6_MULTICAST_HOPS": 18, "IPV6_MULTICAST_IF": 17, "IPV6_MULTICAST_LOOP": 19, "IPV6_NEXTHOP": 9,
    "IPV6_PATHMTU": 61, "IPV6_PKTINFO": 50, "IPV6_RECVDSTOPTS": 58, "IPV6_RECVHOPLIMIT": 51,
    "IPV6_RECVHOPOPTS": 53, "IPV6_RECVPATHMTU": 60, "IPV6_RECVPKTINFO": 49, "IPV6_RECVRTHDR": 56,
    "IPV6_RECVTCLASS": 66, "IPV6_RTHDR": 57, "IPV6_RTHDRDSTOPTS": 55, "IPV6_RTHDR_TYPE_0": 0,
    "IPV6_TCLASS": 67, "IPV6_UNICAST_HOPS": 16, "IPV6_V6ONLY": 26, "IP_ADD_MEMBERSHIP": 35,
    "IP_BIND_ADDRESS_NO_PORT": 24, "IP_DEFAULT_MULTICAST_LOOP": 1, "IP_DEFAULT_MULTICAST_TTL": 1,
    "IP_DROP_MEMBERSHIP": 36, "IP_HDRINCL": 3, "IP_MAX_MEMBERSHIPS": 20, "IP_MULTICAST_IF": 32,
    "IP_MULTICAST_LOOP": 34, "IP_MULTICAST_TTL": 33, "IP_OPTIONS": 4, "IP_RECVOPTS": 6, "IP_RECVRETOPTS": 7,
    "IP_RECVTOS": 13, "IP_RETOPTS": 7, "IP_TOS": 1, "IP_TRANSPARENT": 19, "IP_TTL": 2,
    "MSG_CMSG_CLOEXEC": 1073741824, "MSG_CONFIRM": 2048, "MSG_CTRUNC": 8, "MSG_DONTROUTE": 4,
    "MSG_DONTWAIT": 64, "MSG_EOR": 128, "MSG_ERRQUEUE": 8192, "MSG_MORE": 32768, "MSG_NOSIGNAL": 16384,
    "MSG_OOB": 1, "MSG_PEEK": 2, "MSG_TRUNC": 32, "MSG_WAITALL": 256, "NI_DGRAM": 16, "NI_MAXHOST": 1025,
    "NI_MAXSERV": 32, "NI_NAMEREQD": 8, "NI_NOFQDN": 4, "NI_NUMERICHOST": 1, "NI_NUMERICSERV": 2,
    "SHUT_RD": 0, "SHUT_RDWR": 2, "SHUT_WR": 1, "SOCK_CLOEXEC": 524288, "SOCK_DGRAM": 2,
    "SOCK_NONBLOCK": 2048, "SOCK_RAW": 3, "SOCK_RDM": 4, "SOCK_SEQPACKET": 5, "SOCK_STREAM": 1, "SOL_IP": 0,
    "SOL_SOCKET": 1, "SOL_TCP": 6, "SOL_UDP": 17, "SOMAXCONN": 4096, "SO_ACCEPTCONN": 30, "SO_BROADCAST": 6,
    "SO_DEBUG": 1, "SO_DOMAIN": 39, "SO_DONTROUTE": 5, "SO_ERROR": 4, "SO_KEEPALIVE": 9, "SO_LINGER": 13,
    "SO_OOBINLINE": 10, "SO_PRIORITY": 12, "SO_PROTOCOL": 38, "SO_RCVBUF": 8, "SO_RCVLOWAT": 18,
    "SO_RCVTIMEO": 20, "SO_REUSEADDR": 2, "SO_REUSEPORT": 15, "SO_SNDBUF": 7, "SO_SNDLOWAT": 19,
    "SO_SNDTIMEO": 21, "SO_TYPE": 3, "TCP_CONGESTION": 13, "TCP_CORK": 3, "TCP_DEFER_ACCEPT": 9,
    "TCP_FASTOPEN": 23, "TCP_INFO": 11, "TCP_KEEPCNT": 6, "TCP_KEEPIDLE": 4, "TCP_KEEPINTVL": 5,
    "TCP_LINGER2": 8, "TCP_MAXSEG": 2, "TCP_NODELAY": 1, "TCP_NOTSENT_LOWAT": 25, "TCP_QUICKACK": 12,
    "TCP_SYNCNT": 7, "TCP_USER_TIMEOUT": 18, "TCP_WINDOW_CLAMP": 10,
}

# The prefixes of the constants above: WASI names with one of them that
# Linux lacks (AI_DEFAULT, EAI_MAX, ...) are removed.
_PREFIXES = ("AF_", "AI_", "EAI_", "INADDR_", "IPPORT_", "IPPROTO_", "IPV6_", "IP_", "MSG_", "NI_", "SHUT_",
             "SOCK_", "SOL_", "SOMAXCONN", "SO_", "TCP_")

# socket.py's enums, rebuilt from the constants of these prefixes.
_ENUMS = (("AddressFamily", "AF_", False), ("SocketKind", "SOCK_", False),
          ("MsgFlag", "MSG_", True), ("AddressInfo", "AI_", True))

AF_INET, AF_INET6 = _LINUX["AF_INET"], _LINUX["AF_INET6"]
SOCK_STREAM = _LINUX["SOCK_STREAM"]
_TYPE_FLAGS = _LINUX["SOCK_NONBLOCK"] | _LINUX["SOCK_CLOEXEC"]
_MSG_PEEK = _LINUX["MSG_PEEK"]

# _socket's C functions still speak WASI's numbers. Captured now, before
# _patch() replaces the module's constants.
_C_FAMILY = {AF_INET: _sock.AF_INET, AF_INET6: _sock.AF_INET6}
_c_inet_pton, _c_inet_ntop = _sock.inet_pton, _sock.inet_ntop
_GLOBAL_DEFAULT_TIMEOUT = _sock._GLOBAL_DEFAULT_TIMEOUT

# Receives ask the host for at least this much and keep the rest here:
# http.client reads 8 KiB at a time, and each host call costs a round trip.
_READ_AHEAD = 64 << 10

_state = {
    "installed": False,  # the socket module is patched
    "gateway": False,  # a gateway serves this execution (install() got options)
    "enabled": False,  # ... and its policy allows some host
    "reason": "networking is off for this execution (no network gateway)",
    "generation": 0,  # bumped per execution: older sockets are stale
    "max_chunk": 64 << 10,
}

_originals = {}


class NetworkPolicyError(PermissionError):
    """The sandbox's network policy refused a connection or a transfer."""


class NetworkLimitError(NetworkPolicyError):
    """A per-execution network limit (connections, bytes) was reached."""


# ---- host calls and their errors -------------------------------------------------


def _trace_refusal(host, exc):
    """Reports a refusal as a trace event when the execution is traced."""
    if not _eryx._state.get("trace"):
        return
    _eryx._trace_emit({"kind": "network_refused", "callback": str(host), "line": _eryx._user_line(),
                       "error": {"type": type(exc).__name__, "message": str(exc)}})


def _refusal(cls, host, message):
    exc = cls(message)
    exc.errno = errno.EACCES  # keeps str(exc) the bare message
    _trace_refusal(host, exc)
    return exc


def refuse_locally(host, message):
    """A refusal decided in the guest (ssl without a gateway)."""
    return _refusal(NetworkPolicyError, host, "eryx network policy: " + message)


def _ssl_error(name, message):
    import ssl  # the shim in this directory; imported late, it imports us

    return ssl._error_from_host(getattr(ssl, name, ssl.SSLError), message)


# Host error types (netgate/wire.go) to the exceptions Python code expects.
_ERRNO_ERRORS = {
    "ConnectionRefusedError": (ConnectionRefusedError, errno.ECONNREFUSED),
    "ConnectionResetError": (ConnectionResetError, errno.ECONNRESET),
    "ConnectionAbortedError": (ConnectionAbortedError, errno.ECONNABORTED),
    "BrokenPipeError": (BrokenPipeError, errno.EPIPE),
    "BlockingIOError": (BlockingIOError, errno.EAGAIN),
    "NetUnreachable": (OSError, errno.ENETUNREACH),
    "NetBadConnection": (OSError, errno.EBADF),
}


def _translate(err, host):
    t, msg = err.type, err.message
    if t == "NetworkPolicyError":
        return _refusal(NetworkPolicyError, host, msg)
    if t == "NetworkLimitError":
        return _refusal(NetworkLimitError, host, msg)
    if t == "socket.timeout":
        return _sock.timeout(msg)
    if t == "socket.gaierror":
        return _sock.gaierror(getattr(_sock, "EAI_NONAME", -2), msg)
    if t in _ERRNO_ERRORS:
        cls, code = _ERRNO_ERRORS[t]
        return cls(code, msg)
    if t == "NetError":
        return OSError(msg)
    if t.startswith("ssl."):
        return _ssl_error(t[4:], msg)
    return err


def _call(op, doc, host):
    """Runs one gateway operation; raises the matching Python exception."""
    if not _state["gateway"] and op not in ("net.close", "net.shutdown"):
        raise refuse_locally(host, _state["reason"])
    try:
        return _eryx.host_call_sync(op, _dumps(doc, separators=(",", ":")).encode())
    except eryx.CallbackError as e:
        raise _translate(e, host) from None
    except PermissionError as e:
        # The runtime refuses host operations when no gateway serves the
        # execution.
        raise _refusal(NetworkPolicyError, host, f"eryx network policy: networking is not available to this execution ({e})") from None


def enabled():
    """Whether this execution may attempt connections at all."""
    return _state["enabled"]


def disabled_reason():
    return _state["reason"]


# ---- addresses ---------------------------------------------------------------------


def _idna(host):
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii")
    if not isinstance(host, str):
        raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise _sock.gaierror(getattr(_sock, "EAI_NONAME", -2), f"invalid host name {host!r}: {e}") from None
    return host


def _split_address(address, family):
    if not isinstance(address, tuple) or len(address) not in ((2, 4) if family == AF_INET6 else (2,)):
        kind = "AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])" if family == AF_INET6 \
            else "AF_INET address must be tuple, not " + type(address).__name__
        raise TypeError(kind)
    host, port = _idna(address[0]), address[1]
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if not 0 <= port <= 65535:
        raise OverflowError("connect(): port must be 0-65535.")
    return host, port


def _c_family(family):
    try:
        return _C_FAMILY[family]
    except (KeyError, TypeError):
        if not isinstance(family, int):
            raise TypeError(f"'{type(family).__name__}' object cannot be interpreted as an integer") from None
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol") from None


# The WASI _socket is built without IPv6 ("can't use AF_INET6"), so IPv6
# addresses are converted in Python.


def inet_pton(family, ip_string):
    if family == AF_INET6 and not isinstance(family, bool):
        import ipaddress

        if not isinstance(ip_string, str):
            raise TypeError(f"inet_pton() argument 2 must be str, not {type(ip_string).__name__}")
        try:
            return ipaddress.IPv6Address(ip_string).packed
        except ValueError:
            raise OSError("illegal IP address string passed to inet_pton") from None
    return _c_inet_pton(_c_family(family), ip_string)


def inet_ntop(family, packed_ip):
    if family == AF_INET6 and not isinstance(family, bool):
        import ipaddress

        packed = bytes(packed_ip)
        if len(packed) != 16:
            raise ValueError("invalid length of packed IP address string")
        addr = ipaddress.IPv6Address(packed)
        if addr.ipv4_mapped is not None:
            return f"::ffff:{addr.ipv4_mapped}"  # as glibc writes it
        return str(addr)
    return _c_inet_ntop(_c_family(family), packed_ip)


def _literal_family(host):
    """AF_INET or AF_INET6 for an address literal, else None."""
    for fam in (AF_INET, AF_INET6):
        try:
            inet_pton(fam, host)
            return fam
        except (OSError, ValueError):
            pass
    return None


def _sockaddr(addr, port):
    return (addr, port, 0, 0) if ":" in addr else (addr, port)


# ---- the socket class ----------------------------------------------------------------


class socket:
    """A TCP client socket whose connection lives on the host; it is
    socket.socket in the sandbox (named so, as CPython's class is).

    It behaves like socket.socket for clients: connect, send, sendall,
    recv, recv_into, makefile, timeouts, shutdown, close and the context
    manager protocol. Listening, UDP and file descriptors are unavailable.
    """

    __module__ = "socket"  # as CPython's: <socket.socket ...>, socket.socket in tracebacks

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if fileno is not None:
            raise OSError(errno.EBADF, "eryx: sockets cannot be made from file descriptors in the sandbox")
        family = AF_INET if family == -1 else family
        type = SOCK_STREAM if type == -1 else type
        proto = 0 if proto == -1 else proto
        if family not in (AF_INET, AF_INET6) or type & ~_TYPE_FLAGS != SOCK_STREAM or proto not in (0, 6):
            raise OSError(errno.EAFNOSUPPORT,
                          "eryx: only TCP client sockets (AF_INET or AF_INET6, SOCK_STREAM) are available in the sandbox")
        self._family = family
        self._any_family = False  # create_connection: the host picks IPv4 or IPv6
        self._proto = proto
        self._timeout = 0.0 if type & _LINUX["SOCK_NONBLOCK"] else _sock.getdefaulttimeout()
        self._generation = _state["generation"]
        self._id = None  # the host's connection id, once connected
        self._host = None  # what the code connected to, for messages
        self._peer = None
        self._closed = False  # close() was called (makefile streams may still use it)
        self._released = False  # the host connection is gone
        self._io_refs = 0
        self._rbuf = b""
        self._rpos = 0
        self._eof = False
        self._options = {}

    # -- identity

    @property
    def family(self):
        return _sock.AddressFamily(self._family)

    @property
    def type(self):
        return _sock.SocketKind(SOCK_STREAM)

    @property
    def proto(self):
        return self._proto

    def fileno(self):
        return -1  # there is no descriptor in the sandbox

    def __repr__(self):
        # As CPython's: "<socket.socket [closed] fd=-1, family=2, type=1,
        # proto=6, raddr=(...)>", without laddr (there is no local address).
        closed = " [closed]" if self._released else ""
        r = f"<{type(self).__module__}.{type(self).__qualname__}{closed} fd=-1, family={self._family}, " \
            f"type={SOCK_STREAM}, proto={self._proto}"
        if self._peer and not self._released:
            r += f", raddr={self._peer!r}"
        return r + ">"

    def __getstate__(self):
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    def __enter__(self):
        return self

    def __exit__(self, *args):
        if not self._closed:
            self.close()

    # -- checks

    def _check_usable(self):
        if self._released:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if self._generation != _state["generation"]:
            raise OSError(errno.EBADF, "eryx: this socket belongs to an earlier execution")

    def _check_connected(self):
        self._check_usable()
        if self._id is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    # -- connecting

    def connect(self, address):
        self._check_usable()
        if self._id is not None:
            raise OSError(errno.EISCONN, "Transport endpoint is already connected")
        host, port = _split_address(address, self._family)
        family = 0 if self._any_family else (6 if self._family == AF_INET6 else 4)
        reply = _call("net.connect", {"host": host, "port": port, "family": family, "timeout": self._timeout,
                                      "tls": self._tls_request()}, host)
        self._id, self._host = reply["id"], host
        self._family = AF_INET6 if reply.get("family") == 6 else AF_INET
        self._peer = _sockaddr(reply["peer"], reply["port"])
        self._connected(reply)

    def connect_ex(self, address):
        """Like connect, but returns an errno instead of raising OSError.
        Policy refusals still raise, like name-resolution errors do in
        CPython: their reason matters more than a number."""
        try:
            self.connect(address)
        except NetworkPolicyError:
            raise
        except TimeoutError:
            return errno.ETIMEDOUT
        except OSError as e:
            return e.errno or errno.EIO
        return 0

    def _tls_request(self):
        return None  # SSLSocket asks for TLS along with the connection

    def _connected(self, reply):
        pass

    # -- sending

    def _send_chunk(self, chunk):
        reply = _call("net.send", {"id": self._id, "data": _b64encode(chunk).decode("ascii"),
                                   "timeout": self._timeout}, self._host)
        return reply["sent"]

    def send(self, data, flags=0):
        self._check_connected()
        if flags:
            raise OSError(errno.EOPNOTSUPP, "eryx: send flags are not supported")
        view = memoryview(data).cast("B")
        if not len(view):
            return 0
        return self._send_chunk(bytes(view[:_state["max_chunk"]]))

    def sendall(self, data, flags=0):
        view = memoryview(data).cast("B")
        sent, total = 0, len(view)
        while sent < total:
            sent += self.send(view[sent:], flags)

    def sendto(self, *args):
        raise OSError(errno.EISCONN, "eryx: sendto is not available for TCP sockets")

    def sendfile(self, file, offset=0, count=None):
        if offset:
            file.seek(offset)
        total = 0
        while count is None or total < count:
            block = file.read(min(_state["max_chunk"], count - total) if count else _state["max_chunk"])
            if not block:
                break
            self.sendall(block)
            total += len(block)
        return total

    # -- receiving

    def _recv_chunk(self, want):
        reply = _call("net.recv", {"id": self._id, "max": want, "timeout": self._timeout}, self._host)
        return _b64decode(reply["data"])

    def recv(self, bufsize, flags=0):
        self._check_connected()
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if flags & ~_MSG_PEEK:
            raise OSError(errno.EOPNOTSUPP, "eryx: only the MSG_PEEK flag is supported")
        if bufsize == 0:
            return b""
        if self._rpos >= len(self._rbuf) and not self._eof:
            data = self._recv_chunk(min(max(bufsize, _READ_AHEAD), _state["max_chunk"]))
            self._rbuf, self._rpos, self._eof = data, 0, not data
        out = self._rbuf[self._rpos:self._rpos + bufsize]
        if not flags & _MSG_PEEK:
            self._rpos += len(out)
        return out

    def recv_into(self, buffer, nbytes=0, flags=0):
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        view = memoryview(buffer).cast("B")
        n = nbytes or len(view)
        if n > len(view):
            raise ValueError("buffer too small for requested bytes")
        data = self.recv(n, flags)
        view[:len(data)] = data
        return len(data)

    def recvfrom(self, bufsize, flags=0):
        return self.recv(bufsize, flags), self._peer

    def recvfrom_into(self, buffer, nbytes=0, flags=0):
        return self.recv_into(buffer, nbytes, flags), self._peer

    def _buffered(self):
        return len(self._rbuf) - self._rpos

    # -- timeouts

    def settimeout(self, value):
        if value is not None:
            value = float(value)
            if value != value:
                raise ValueError("Invalid value NaN (not a number)")
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self):
        return self._timeout

    def setblocking(self, flag):
        self._timeout = None if flag else 0.0

    def getblocking(self):
        return self._timeout != 0.0

    # -- options and names

    def setsockopt(self, level, optname, value, optlen=None):
        self._options[(level, optname)] = value  # accepted, with no effect on the host connection

    def getsockopt(self, level, optname, buflen=None):
        if (level, optname) == (_sock.SOL_SOCKET, _sock.SO_TYPE):
            return SOCK_STREAM
        value = self._options.get((level, optname), 0)
        if buflen:
            return value if isinstance(value, bytes) else b"\0" * buflen
        return value

    def getpeername(self):
        self._check_connected()
        return self._peer

    def getsockname(self):
        self._check_usable()
        return ("::", 0, 0, 0) if self._family == AF_INET6 else ("0.0.0.0", 0)

    # -- what a sandbox cannot do

    def bind(self, address):
        raise OSError(errno.EACCES, "eryx: sockets in the sandbox cannot bind to a local address")

    def listen(self, backlog=0):
        raise OSError(errno.EOPNOTSUPP, "eryx: the sandbox can only make outgoing connections")

    def accept(self):
        raise OSError(errno.EOPNOTSUPP, "eryx: the sandbox can only make outgoing connections")

    def dup(self):
        raise OSError(errno.EOPNOTSUPP, "eryx: sockets cannot be duplicated in the sandbox")

    def detach(self):
        raise OSError(errno.EOPNOTSUPP, "eryx: sockets have no descriptor to detach in the sandbox")

    # -- files

    def makefile(self, mode="r", buffering=None, *, encoding=None, errors=None, newline=None):
        """A file object over the socket, as socket.socket.makefile: the
        connection stays open until the socket and every file are closed."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        raw = _sock.SocketIO(self, ("r" if reading else "") + ("w" if writing else ""))
        self._io_refs += 1
        size = io.DEFAULT_BUFFER_SIZE if buffering is None or buffering < 0 else buffering
        if size == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        if reading and writing:
            stream = io.BufferedRWPair(raw, raw, size)
        elif reading:
            stream = io.BufferedReader(raw, size)
        else:
            stream = io.BufferedWriter(raw, size)
        if "b" in mode:
            return stream
        text = io.TextIOWrapper(stream, io.text_encoding(encoding), errors, newline)
        text.mode = mode
        return text

    def _decref_socketios(self):
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed:
            self.close()

    # -- closing

    def shutdown(self, how):
        self._check_connected()
        if how not in (0, 1, 2):
            raise ValueError(f"invalid shutdown mode {how}")
        _call("net.shutdown", {"id": self._id, "how": how}, self._host)
        if how in (0, 2):
            self._eof, self._rbuf, self._rpos = True, b"", 0

    def close(self):
        self._closed = True
        if self._io_refs <= 0:
            self._release()

    def _release(self):
        if self._released:
            return
        self._released = True
        cid, self._id = self._id, None
        if cid is not None and self._generation == _state["generation"]:
            try:
                _call("net.close", {"id": cid}, self._host)
            except Exception:  # noqa: BLE001 - closing must not fail; the host closes at the end anyway
                pass

    def __del__(self):
        try:
            self._release()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass

    def _adopt(self, other):
        """Takes over other's connection (SSLContext.wrap_socket); other is
        left detached, so closing it does nothing, as in the stdlib."""
        if not isinstance(other, socket):
            raise TypeError("eryx: only sockets of the sandbox's network gateway can be wrapped")
        other._check_usable()
        self.__dict__.update(other.__dict__)
        self._closed, self._io_refs = False, 0
        other._id, other._released, other._closed = None, True, True


# ---- module-level functions ---------------------------------------------------------


def create_connection(address, timeout=_GLOBAL_DEFAULT_TIMEOUT, source_address=None, *, all_errors=False):
    """Connects to (host, port): the host resolves the name under the policy
    and tries each address, so one call does what the stdlib's loop does."""
    host, port = address
    if source_address and tuple(source_address)[:2] not in (("", 0), ("0.0.0.0", 0), ("::", 0)):
        raise OSError(errno.EADDRNOTAVAIL, "eryx: connections cannot choose a source address in the sandbox")
    sock = socket(AF_INET, SOCK_STREAM)
    sock._any_family = True
    if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
        sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except OSError as e:
        sock.close()
        if all_errors:
            raise ExceptionGroup("create_connection failed", [e]) from None
        raise
    except BaseException:
        sock.close()
        raise
    return sock


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    """Resolves through the host, which only answers for names the policy
    allows and whose every address is reachable."""
    if host is None:
        raise _sock.gaierror(getattr(_sock, "EAI_NONAME", -2), "eryx: no local addresses in the sandbox")
    host = _idna(host)
    if port is None:
        port = 0
    elif isinstance(port, (str, bytes)):
        text = port.decode("ascii") if isinstance(port, bytes) else port
        port = int(text) if text.isdigit() else {"http": 80, "https": 443}.get(text)
        if port is None:
            raise _sock.gaierror(getattr(_sock, "EAI_SERVICE", -8), "Servname not supported for ai_socktype")
    if type not in (0, SOCK_STREAM):
        raise _sock.gaierror(getattr(_sock, "EAI_SOCKTYPE", -7), "eryx: only TCP (SOCK_STREAM) is available in the sandbox")
    if family not in (0, AF_INET, AF_INET6):
        raise _sock.gaierror(getattr(_sock, "EAI_FAMILY", -6), "ai_family not supported")
    if _literal_family(host) is not None:
        addresses = [host]  # nothing to look up; connecting is judged later
    else:
        fam = {AF_INET: 4, AF_INET6: 6}.get(family, 0)
        addresses = _call("net.resolve", {"host": host, "family": fam}, host)["addresses"]
    out = []
    for addr in addresses:
        fam = AF_INET6 if ":" in addr else AF_INET
        if family and fam != family:
            continue
        out.append((_sock.AddressFamily(fam), _sock.SocketKind(SOCK_STREAM), 6,
                    host if flags & getattr(_sock, "AI_CANONNAME", 2) and not out else "", _sockaddr(addr, port)))
    if not out:
        raise _sock.gaierror(getattr(_sock, "EAI_NONAME", -2), f"no address of the requested family for {host!r}")
    return out


def gethostbyname(host):
    return getaddrinfo(host, None, AF_INET)[0][4][0]


def gethostbyname_ex(host):
    host = _idna(host)
    return host, [], [ai[4][0] for ai in getaddrinfo(host, None, AF_INET)]


def gethostbyaddr(ip):
    raise _sock.herror(1, "eryx: reverse lookups are not available in the sandbox")


def gethostname():
    return "localhost"


def getfqdn(name=""):
    name = name.strip()
    return name if name and name not in ("0.0.0.0", "::") else "localhost.localdomain"


def socketpair(family=None, type=None, proto=0):
    """A sandbox has no local sockets to pair: an OSError whose class and
    errno agree (socket.py's fallback raised ValueError, or went to the
    network gateway and came back as a policy refusal)."""
    raise OSError(errno.EOPNOTSUPP, "eryx: socketpair() needs local sockets, which a sandbox does not have")


_PATCHED = {
    "socket": socket, "create_connection": create_connection, "getaddrinfo": getaddrinfo, "socketpair": socketpair,
    "gethostbyname": gethostbyname, "gethostbyname_ex": gethostbyname_ex, "gethostbyaddr": gethostbyaddr,
    "gethostname": gethostname, "getfqdn": getfqdn, "inet_pton": inet_pton, "inet_ntop": inet_ntop,
}


def _patch():
    if _state["installed"]:
        return
    for name, value in _PATCHED.items():
        _originals[name] = getattr(_sock, name, None)
        setattr(_sock, name, value)
    _linux_constants()
    _state["installed"] = True


def _linux_constants():
    import enum

    # Only socket: _socket is the C layer, whose functions take WASI's
    # numbers (wrappers such as inet_pton translate).
    for name in [n for n in vars(_sock) if n.startswith(_PREFIXES) and n.isupper() and n not in _LINUX]:
        if isinstance(getattr(_sock, name), int):
            delattr(_sock, name)
    for name, value in _LINUX.items():
        setattr(_sock, name, value)
    # As socket.py does: the module's constants become the enums' members,
    # so that repr(socket.AF_INET) is <AddressFamily.AF_INET: 2>.
    for enum_name, prefix, flag in _ENUMS:
        base = enum.IntFlag if flag else enum.IntEnum
        base._convert_(enum_name, "socket", lambda n, p=prefix: n.isupper() and n.startswith(p))


def install(options):
    """Configures the shims for this execution.

    _eryx calls it before an execution with network options (a dict from
    netgate.Session.GuestOptions); it is idempotent. install(None) marks
    an execution without a gateway: connecting then raises
    NetworkPolicyError saying networking is off."""
    _state["generation"] += 1  # sockets of earlier executions are stale
    if isinstance(options, dict):
        _state["gateway"] = True
        _state["enabled"] = bool(options.get("enabled", True))
        _state["reason"] = "networking is disabled for this execution (no host is allowed)"
        chunk = options.get("max_chunk")
        if isinstance(chunk, int) and 0 < chunk <= (1 << 20):
            _state["max_chunk"] = chunk
    else:
        _state["gateway"] = _state["enabled"] = False
        _state["reason"] = "networking is off for this execution (no network gateway)"
    _patch()


# The shims are in place from the start (asyncio imports ssl, which imports
# this module, while the interpreter image is built), with networking off
# until install() says otherwise: code without a gateway gets a clear
# refusal instead of WASI's bare "not supported".
_patch()
