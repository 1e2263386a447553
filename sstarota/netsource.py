"""Packages from http:// and https:// URLs (otaunpack -x URL), on the standard library only.

http.client, ssl and socket are in every Python a board carries; a third-party client
(requests, urllib3) would add megabytes of modules to a 64 MB board for what one GET with a
Range header does. This module is imported only when a URL is given.

A Remote is one URL and what its first answer said: the length, a validator (ETag, else
Last-Modified) and its content coding. An HttpStream reads it from an offset; when the
connection drops, stalls or ends early it asks again, so the bytes it hands out are one
file's: with a validator, `Range: bytes=N-` pinned to it (`If-Match`, else
`If-Unmodified-Since`, and the answer's own validator compared); without one, the server is
not trusted to resume: the file is read again from byte 0 and its first N bytes must hash
(SHA-256) to those already handed out. An answer for another file (a 200 to a ranged request,
a changed ETag or length, a 412, different first bytes) is a ChangedError, never mixed in.

Retries are for what can change: a refused, dropped, stalled or cut-short connection and the
statuses in RETRY_STATUS. An answer no retry can mend (a malformed status line or header, too
many headers, an unknown transfer or content coding, a 404) ends the download at once.
Retries that get no byte back off (0.5 s doubling, at most 8 s); a retry after progress is
immediate. Every socket operation waits at most --timeout and never past the pass's
--time-limit: the limit bounds the whole pass (connecting, the TLS handshake, status line,
headers, chunk lines and body) and the name lookup (in a thread), however slowly a server
drips its bytes.

A URL's `user:password@` (or SSTAROTA_HTTP_AUTH) logs in with HTTP Basic auth, sent only to
the URL's own origin (scheme, host and port: never to a host a redirect names) and never
printed: messages show `user:***@`. Proxies come from http_proxy / https_proxy / no_proxy (as curl and wget read
them; the parser is urllib.request's, imported only when one of them is set), with Basic
auth from their own `user:password@`. HTTPS verifies the server against the system CA
store, or against --ca FILE only; a redirect from https:// to http:// is refused.

Every DownloadError carries a reason, a fixed word for programs (REASONS).
"""

import functools
import hashlib
import http.client
import io
import os
import socket
import time
from typing import NamedTuple, Optional
from urllib.parse import unquote, urljoin, urlsplit

from .defaults import URL_RETRIES, URL_TIME_LIMIT, URL_TIMEOUT
from .errors import InputError

try:
    import ssl

    CERT_ERRORS = (ssl.SSLCertVerificationError,)
except ImportError:  # a board Python built without OpenSSL: http:// only
    ssl = None
    CERT_ERRORS = ()

CHUNK = 1 << 16
REDIRECTS = 5
REDIRECT_STATUS = (301, 302, 303, 307, 308)
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
#: "user:password" for Basic auth when the URL has none: unlike the command line (which
#: every local user can read with ps), the environment is readable only by its owner
AUTH_ENV = "SSTAROTA_HTTP_AUTH"
#: content codings read (the body is gzip data: sources.py inflates it); identity is none
GZIP_CODINGS = ("gzip", "x-gzip")

#: DownloadError.reason: why a download ended
REASONS = {
    "bad-url": "the URL given cannot be fetched as it is written",
    "bad-redirect": "a redirect names a URL that cannot be fetched",
    "bad-proxy": "the proxy the environment names cannot be used",
    "downgrade": "a redirect from https:// to http://",
    "redirects": "more than REDIRECTS redirects",
    "http-status": "an HTTP status no retry can mend (404, 401, ...)",
    "protocol": "an answer that is not HTTP as otaunpack reads it (malformed, too many headers, an unknown coding)",
    "encoding": "a content coding other than gzip",
    "certificate": "the server's certificate is not trusted",
    "changed": "the file on the server is not the one the first answer described",
    "time-limit": "the pass took longer than --time-limit",
    "network": "--retries attempts in a row got no byte",
}


class DownloadError(InputError):
    """The package cannot be fetched (nothing was written because of it); reason: a REASONS key."""

    def __init__(self, message, reason="network"):
        super().__init__(message)
        assert reason in REASONS, reason
        self.reason = reason


class ChangedError(DownloadError):
    """The file on the server is not the one the first answer described."""

    def __init__(self, message):
        super().__init__(message, "changed")


class _TimeUp(Exception):
    """The pass's time limit is spent (raised inside http.client's reads, caught by HttpStream)."""


class _Again(Exception):
    """A status worth asking again for (RETRY_STATUS)."""


class Net:
    """How hard to try: seconds per socket operation, retries without progress, seconds per pass."""

    def __init__(self, timeout=URL_TIMEOUT, retries=URL_RETRIES, time_limit=URL_TIME_LIMIT, ca=None):
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.time_limit = float(time_limit)
        self.ca = ca
        self._ctx = None

    def ssl_context(self):
        if ssl is None:
            raise InputError("this Python has no ssl module (built without OpenSSL): https:// URLs cannot be "
                             "verified; use an http:// URL (then nothing proves where the package came from)")
        if self._ctx is None:
            try:
                self._ctx = ssl.create_default_context(cafile=self.ca)
            except (OSError, ssl.SSLError) as exc:
                raise InputError("--ca %s: %s" % (self.ca, getattr(exc, "strerror", None) or exc)) from None
        return self._ctx


class Clock:
    """One pass's time limit: every socket operation waits at most --timeout and never past it."""

    def __init__(self, net):
        self.net = net
        self.deadline = time.monotonic() + net.time_limit

    def left(self):
        return self.deadline - time.monotonic()

    def budget(self):
        """Seconds the next socket operation may wait; _TimeUp when none are left."""
        left = self.left()
        if left <= 0:
            raise _TimeUp()
        return min(self.net.timeout, left) if self.net.timeout > 0 else left


def shown(url):
    """url as messages show it: the password of a `user:password@` replaced by ***. Works on
    any text, URLs urlsplit cannot read included."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0] + [len(rest)])
    at = rest.rfind("@", 0, end)
    if at < 0:
        # a password with an unencoded / ? or # in it ends the authority early: "u:pa/ss@host"
        after = rest[:end].partition(":")[2]
        if not after or after.isdigit() or "@" not in rest:
            return url
        at = rest.rfind("@")
    user, colon, _ = rest[:at].partition(":")
    return "%s://%s%s@%s" % (scheme, user, ":***" if colon else "", rest[at + 1:])


class Where(NamedTuple):
    """An http(s) URL's parts, as parse_url checked them."""

    scheme: str
    host: str
    port: Optional[int]  # None: the scheme's
    target: str  # the request target: path and query
    url: str  # the URL without user:password@ and fragment: what is printed and sent to a proxy
    auth: Optional[str]  # the Authorization value of its user:password@, or None

    @property
    def origin(self):
        return self.scheme, self.host.lower(), self.port or (443 if self.scheme == "https" else 80)


def parse_url(url, reason="bad-url"):
    """The parts of an http(s) URL, or a DownloadError (reason) saying in one line why it is not one."""

    def bad(why):
        return DownloadError("bad URL %s: %s" % (shown(url), why), reason)

    if not url.isascii():
        raise bad("it has non-ASCII characters (percent-encode them)")
    if any(c <= " " or c == "\x7f" for c in url):
        raise bad("it has a space or a control character (percent-encode it: %20)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # its text may quote a part of the password: not shown
        raise bad("an unbalanced [ or ] (an IPv6 address is written [ADDRESS])" if "IPv6" in str(exc) else
                  "the port is not a number from 1 to 65535") from None
    if parts.scheme not in ("http", "https"):
        raise bad("not an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise bad("no host name")
    if port == 0:
        raise bad("port 0")
    try:
        host.encode("idna")
    except UnicodeError:
        raise bad("the host name %s is not one (empty or over-long labels)" % host) from None
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    netloc = parts.netloc.rpartition("@")[2]
    auth = None
    if parts.username is not None:
        auth = _basic("%s:%s" % (unquote(parts.username), unquote(parts.password or "")))
    return Where(parts.scheme, host, port, target, "%s://%s%s" % (parts.scheme, netloc, target), auth)


def _basic(pair):
    """The Authorization value of HTTP Basic auth for "user:password"."""
    import base64

    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _proxy(where):
    """The proxy (a Where) for where from the environment, or None."""
    if not any(k.lower().endswith("_proxy") for k in os.environ):
        return None
    import urllib.request

    if urllib.request.proxy_bypass_environment(where.host):
        return None
    value = urllib.request.getproxies_environment().get(where.scheme)
    if not value:
        return None
    try:
        return parse_url(value if "://" in value else "http://" + value, "bad-proxy")
    except DownloadError as exc:
        raise DownloadError("the proxy for %s:// URLs in the environment (%s_proxy) cannot be used: %s"
                            % (where.scheme, where.scheme, exc.message), "bad-proxy") from None


#: bytes of status lines and headers an answer may have (http.client alone allows 100 lines of
#: 64 KiB: 6.5 MB, and as much again parsed, on a board with 30 MB free)
HEAD_LIMIT = 64 << 10


class _BoundedReads(io.RawIOBase):
    """A socket's reads, each waiting at most what the clock allows; up to `limit` bytes read
    in all when a limit is set."""

    def __init__(self, sock, clock):
        super().__init__()
        self.sock = sock
        self.raw = sock.makefile("rb", buffering=0)  # holds the socket open as http.client's own file does
        self.clock = clock
        self.count = 0
        self.limit = None

    def readable(self):
        return True

    def readinto(self, b):
        if self.limit is not None and self.count >= self.limit:
            raise http.client.HTTPException("the status line and headers are over %d KiB" % (HEAD_LIMIT >> 10))
        budget = self.clock.budget()
        if budget != self.sock.gettimeout():  # the same --timeout until the time limit is near
            self.sock.settimeout(budget)
        n = self.raw.readinto(b)
        self.count += n or 0
        return n

    def close(self):
        if not self.closed:
            try:
                self.raw.close()
            finally:
                super().close()


class _Response(http.client.HTTPResponse):
    """http.client's response, reading the socket through _BoundedReads: the status line, the
    headers, chunk lines and the body cannot take longer than the pass's time limit."""

    def __init__(self, sock, *args, clock=None, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()
        self.fp = io.BufferedReader(_BoundedReads(sock, clock))

    def begin(self):
        """The status line and headers, HEAD_LIMIT bytes at most (a read-ahead's worth more)."""
        reads = self.fp.raw
        reads.limit = reads.count + HEAD_LIMIT
        try:
            super().begin()
        finally:
            reads.limit = None


def _connection(where, net, clock):
    """An http.client connection for where (through a proxy when the environment names one),
    the request target to send and the headers the proxy needs."""
    proxy = _proxy(where)
    timeout = clock.budget()  # replaced at connect time by create_connection below
    extra = {}
    if proxy is None:
        if where.scheme == "https":
            conn = http.client.HTTPSConnection(where.host, where.port or 443, timeout=timeout,
                                               context=net.ssl_context())
        else:
            conn = http.client.HTTPConnection(where.host, where.port or 80, timeout=timeout)
        target = where.target
    elif where.scheme == "http":  # a plain proxy takes the absolute URL
        conn = http.client.HTTPConnection(proxy.host, proxy.port or 80, timeout=timeout)
        target = where.url
        if proxy.auth:
            extra["Proxy-Authorization"] = proxy.auth
    else:
        conn = http.client.HTTPSConnection(proxy.host, proxy.port or 80, timeout=timeout, context=net.ssl_context())
        conn.set_tunnel(where.host, where.port or 443,
                        headers={"Proxy-Authorization": proxy.auth} if proxy.auth else None)
        target = where.target
    conn.response_class = functools.partial(_Response, clock=clock)

    def create_connection(address, timeout=None, source_address=None, *args):
        """The name lookup, the TCP connect and the TLS handshake after it wait what the clock allows."""
        error = None
        for addr in _lookup(address[0], address[1], clock):
            try:
                sock = socket.create_connection(addr, clock.budget(), source_address, *args)
            except OSError as exc:
                error = exc
                continue
            sock.settimeout(clock.budget())
            return sock
        raise error or OSError("no address for %s" % address[0])

    conn._create_connection = create_connection  # http.client's own hook (socket.create_connection)
    return conn, target, extra


def _lookup(host, port, clock):
    """The (address, port) pairs of host, looked up in a thread and waited for at most what the
    clock allows (the C library's lookup cannot be interrupted: a stuck one finishes on its own,
    in a daemon thread nothing waits for)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return [(host, port)]
        except (OSError, ValueError):
            pass
    import threading

    found = []

    def lookup():
        try:
            found.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the waiting thread
            found.append(exc)

    worker = threading.Thread(target=lookup, name="sstarota-lookup", daemon=True)
    worker.start()
    worker.join(clock.budget())
    if not found:
        raise socket.timeout("the name lookup of %s took longer" % host)
    if isinstance(found[0], BaseException):
        raise found[0]
    return [info[4][:2] for info in found[0]]


def _token(value):
    """A validator as it may be sent back: printable ASCII, else None (not usable)."""
    if value and all(" " <= c < "\x7f" for c in value):
        return value
    return None


def _number(value, what):
    """A header's non-negative integer (repeated copies must agree), None when absent."""
    if value is None:
        return None
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise http.client.HTTPException("a bad %s header (%s)" % (what, value[:40]))
    return int(values.pop())


class Remote:
    """One package URL: its length, validator and coding, pinned by the first answer."""

    def __init__(self, url, net=None):
        self.where = parse_url(url)
        if self.where.auth is None and os.environ.get(AUTH_ENV):
            self.where = self.where._replace(auth=_basic(os.environ[AUTH_ENV]))
        self.url = self.where.url
        self.name = shown(url)
        self.net = net or Net()
        self.length = None
        self.etag = None
        self.modified = None
        self.coded = False  # the body is gzip data by its Content-Encoding
        self.pinned = False

    def resumable(self):
        """Whether a range can be asked pinned to a validator (else: read again from 0)."""
        return bool(self.etag or self.modified)

    def get(self, offset, clock=None):
        """A response positioned at offset (following redirects). Raises DownloadError for
        answers no retry can mend, OSError/HTTPException/_Again for those one may."""
        clock = clock or Clock(self.net)
        where = self.where
        secure = where.scheme == "https"
        for _ in range(REDIRECTS + 1):
            conn, target, extra = _connection(where, self.net, clock)
            headers = dict(self._headers(offset), **extra)
            if self.where.auth and where.origin == self.where.origin:
                headers["Authorization"] = self.where.auth
            try:
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
                location = resp.getheader("Location") if resp.status in REDIRECT_STATUS else None
                if location is not None:
                    where = self._redirect(where, location, secure)
                    secure = secure or where.scheme == "https"
                    conn.close()
                    continue
                self._check(resp, offset)
            except BaseException:
                conn.close()
                raise
            return conn, resp
        raise self.give_up("more than %d redirects" % REDIRECTS, "redirects")

    def _redirect(self, where, location, secure):
        try:
            new = parse_url(urljoin(where.url, location), "bad-redirect")
        except ValueError as exc:
            raise self.give_up("the server redirects to a bad URL %s: %s" % (shown(location), exc),
                               "bad-redirect") from None
        except DownloadError as exc:
            raise self.give_up("the server redirects to a %s" % exc.message, "bad-redirect") from None
        if secure and new.scheme != "https":
            raise self.give_up("the server redirects from https:// to %s: refused (an https:// download stays "
                               "https://)" % new.url, "downgrade")
        return new

    def _headers(self, offset):
        h = {"Accept-Encoding": "identity", "User-Agent": "sstarota-otaunpack"}
        if offset:
            h["Range"] = "bytes=%d-" % offset
        if self.pinned and self.etag and not self.etag.startswith("W/"):
            h["If-Match"] = self.etag
        elif self.pinned and self.modified:
            h["If-Unmodified-Since"] = self.modified
        return h

    def _check(self, resp, offset):
        status = resp.status
        if status == 412:
            raise ChangedError("%s changed on the server since it was first read (precondition failed)" % self.name)
        if status in RETRY_STATUS:
            raise _Again("HTTP %d %s" % (status, resp.reason))
        if status not in (200, 206):
            raise self.give_up("HTTP %d %s" % (status, resp.reason), "http-status")
        coding = (resp.getheader("Transfer-Encoding") or "chunked").strip().lower()
        if coding != "chunked":
            raise self.give_up("the server sent Transfer-Encoding: %s, which otaunpack cannot read" % coding[:40],
                               "protocol")
        coding = (resp.getheader("Content-Encoding") or "identity").strip().lower()
        if coding not in GZIP_CODINGS + ("identity",):
            raise self.give_up("the server sent Content-Encoding: %s, which otaunpack cannot read: serve the file as "
                               "it is" % coding[:40], "encoding")
        if status == 200 and offset:
            raise ChangedError("%s: the server sent the whole file to a ranged request (no Range support, or "
                               "the file changed); cannot resume" % self.name)
        length = _number(resp.getheader("Content-Length"), "Content-Length")
        if status == 206:
            rng, _, total = (resp.getheader("Content-Range") or "").partition(" ")[2].partition("/")
            start = rng.partition("-")[0]
            if start != str(offset):
                raise ChangedError("%s: the server answered a range from byte %s, asked %d" % (self.name, start[:20],
                                                                                              offset))
            length = int(total) if total.isdigit() else None
        self._pin(resp, length, coding in GZIP_CODINGS)

    def _pin(self, resp, length, coded):
        etag, modified = _token(resp.getheader("ETag")), _token(resp.getheader("Last-Modified"))
        if not self.pinned:
            self.length, self.etag, self.modified, self.coded, self.pinned = length, etag, modified, coded, True
            return
        if self.length is None:
            self.length = length  # a first answer without a length (chunked): a range's total gives it
        if (self.etag and etag and etag != self.etag) or (length is not None and length != self.length) or \
                (not self.etag and self.modified and modified and modified != self.modified) or coded != self.coded:
            raise ChangedError("%s changed on the server since it was first read (ETag %s, %s bytes; was %s, %s "
                               "bytes)" % (self.name, etag, length, self.etag, self.length))

    def give_up(self, why, reason="network"):
        """The DownloadError that ends the download, in one line whatever the server sent."""
        return DownloadError("cannot download %s: %s" % (self.name, " ".join(why.split())), reason)


#: http.client's answers that no retry can mend (a dropped connection is RemoteDisconnected,
#: a short body IncompleteRead: those are retried)
_PERMANENT = (http.client.LineTooLong, http.client.BadStatusLine, http.client.UnknownProtocol,
              http.client.UnknownTransferEncoding)


def _permanent(exc):
    if isinstance(exc, (http.client.RemoteDisconnected, http.client.IncompleteRead)):
        return False
    # a bare HTTPException is http.client's "got more than 100 headers", or our bad length
    return isinstance(exc, _PERMANENT) or type(exc) is http.client.HTTPException


def _why(exc, net):
    if isinstance(exc, socket.timeout):
        return "no answer within %g s" % net.timeout
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection ended early"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without an answer"
    if isinstance(exc, http.client.LineTooLong):
        return "the server sent a line over 64 KiB (%s)" % (exc.args[0] if exc.args else "")
    if isinstance(exc, http.client.BadStatusLine):
        return "the server's answer does not start with an HTTP status line (%r)" % str(exc)[:60]
    if isinstance(exc, http.client.UnknownProtocol):
        return "the server answers in an HTTP version otaunpack does not read (%s)" % str(exc)[:40]
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class HttpStream(io.RawIOBase):
    """The bytes of a Remote from offset 0, resumed across dropped connections."""

    def __init__(self, remote, on_bytes=None):
        super().__init__()
        self.remote = remote
        self.on_bytes = on_bytes
        self.offset = 0
        self.conn = self.resp = None
        self.failures = 0
        self.clock = Clock(remote.net)  # per pass
        self.prefix = None  # without a validator: the SHA-256 of the bytes handed out
        self._connect()

    def readable(self):
        return True

    def _connect(self):
        r = self.remote
        while True:
            try:
                start = self.offset if r.resumable() else 0
                self.conn, self.resp = r.get(start, self.clock)
                if self.offset == 0 and not r.resumable():
                    self.prefix = hashlib.sha256()
                if start < self.offset:
                    self._catch_up()
                return
            except BaseException as exc:
                self._drop()
                self._handle(exc)

    def _catch_up(self):
        """Read again the bytes handed out before the drop: they must be the same file's."""
        want, got = self.offset, 0
        digest = hashlib.sha256()
        buf = memoryview(bytearray(CHUNK))
        while got < want:
            n = self.resp.readinto(buf[:min(CHUNK, want - got)])
            if not n:
                raise http.client.IncompleteRead(b"", want - got)
            digest.update(buf[:n])
            got += n
        if digest.digest() != self.prefix.digest():
            raise ChangedError("%s changed on the server since it was first read: its first %d bytes differ (the "
                               "server gives no ETag or Last-Modified to resume against)" % (self.remote.name, want))

    def _handle(self, exc):
        """One failed attempt: raised again as a DownloadError, or backed off from (returns)."""
        r = self.remote
        if isinstance(exc, DownloadError):
            raise exc
        if isinstance(exc, _TimeUp):
            raise self._time_up() from None
        if isinstance(exc, CERT_ERRORS):
            raise r.give_up("the server's certificate is not trusted (%s)" % exc.verify_message,
                            "certificate") from None
        if isinstance(exc, (http.client.HTTPException, ValueError)) and _permanent(exc):
            raise r.give_up(_why(exc, r.net), "protocol") from None
        if not isinstance(exc, (OSError, http.client.HTTPException, _Again)):
            raise exc
        if self.clock.left() <= 0:
            raise self._time_up() from None
        self.failures += 1
        if self.failures > r.net.retries:
            raise r.give_up(_why(exc, r.net)) from None
        wait = 0 if self.failures == 1 else min(8.0, 0.5 * 2 ** (self.failures - 2))
        if wait >= self.clock.left():
            raise self._time_up(_why(exc, r.net)) from None
        if wait:
            time.sleep(wait)

    def _time_up(self, why=None):
        limit = "time limit of %g s reached" % self.remote.net.time_limit
        return self.remote.give_up("%s; %s" % (why, limit) if why else limit, "time-limit")

    def _drop(self):
        if self.conn is not None:
            self.conn.close()
        if self.resp is not None:
            self.resp.close()
        self.conn = self.resp = None

    def readinto(self, b):
        while True:
            length = self.remote.length
            if length is not None and self.offset >= length:
                return 0
            try:
                self.clock.budget()
                if self.resp is None:
                    self._connect()
                n = self.resp.readinto(b)
                if n == 0 and length is None:
                    return 0
                if n == 0:
                    raise http.client.IncompleteRead(b"", length - self.offset)
            except BaseException as exc:
                self._drop()
                self._handle(exc)
                continue
            self.offset += n
            if self.prefix is not None:
                self.prefix.update(memoryview(b)[:n])
            self.failures = 0
            if self.on_bytes is not None:
                self.on_bytes(self.offset, length)
            return n

    def close(self):
        try:
            self._drop()
        finally:
            super().close()


class Meter:
    """Download progress (bytes and rate) to report(done, total, rate), at most twice a second."""

    def __init__(self, report, every=0.5):
        self.report = report
        self.every = every
        self.start = self.last = time.monotonic()

    def __call__(self, done, total, force=False):
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            self.report(done, total, done / max(now - self.start, 1e-6))
