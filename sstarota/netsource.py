"""Packages from http:// and https:// URLs (otaunpack -x URL), on the standard library only.

http.client, ssl and socket are in every Python a board carries; a third-party client
(requests, urllib3) would add megabytes of modules to a 64 MB board for what one GET with a
Range header does. This module is imported only when a URL is given.

A Remote is one URL and what its first answer said: the length and a validator (ETag, else
Last-Modified). An HttpStream reads it from an offset; when the connection drops, stalls or
ends early it asks again with `Range: bytes=N-` and `If-Range`/`If-Match` pinned to that
validator, so the bytes it hands out are one file's: an answer for another file (a 200 to a
ranged request, a changed ETag or length, a 412) is an error, never mixed in. Retries that
get no byte back off (0.5 s doubling, at most 8 s); a retry after progress is immediate.
Every socket operation has a timeout, and every pass over the file a time limit.

Proxies come from http_proxy / https_proxy / no_proxy (as curl and wget read them; the
parser is urllib.request's, imported only when one of them is set). HTTPS verifies the
server against the system CA store, or against --ca FILE only.
"""

import http.client
import io
import os
import socket
import time
from urllib.parse import urljoin, urlsplit

from .errors import InputError

try:
    import ssl

    CERT_ERRORS = (ssl.SSLCertVerificationError,)
except ImportError:  # a board Python built without OpenSSL: http:// only
    ssl = None
    CERT_ERRORS = ()

CHUNK = 1 << 16
REDIRECTS = 5
RETRY_STATUS = (408, 429, 500, 502, 503, 504)


class DownloadError(InputError):
    """The package cannot be fetched (nothing was written because of it)."""


class ChangedError(DownloadError):
    """The file on the server is not the one the first answer described."""


class Net:
    """How hard to try: seconds per socket operation, retries without progress, total seconds."""

    def __init__(self, timeout=30.0, retries=8, time_limit=3600.0, ca=None):
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


def is_url(path):
    return path.startswith(("http://", "https://"))


def _proxy(scheme, host):
    """The proxy URL for scheme://host from the environment, or None."""
    if not any(k.lower().endswith("_proxy") for k in os.environ):
        return None
    import urllib.request

    if urllib.request.proxy_bypass_environment(host):
        return None
    return urllib.request.getproxies_environment().get(scheme)


def _connection(url, net):
    """An http.client connection for url (through a proxy when the environment names one)
    and the request target to send."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError("%s: not an http:// or https:// URL" % url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    proxy = _proxy(parts.scheme, parts.hostname)
    host, port = parts.hostname, parts.port
    if proxy:
        p = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if parts.scheme == "http":  # a plain proxy takes the absolute URL
            return http.client.HTTPConnection(p.hostname, p.port or 80, timeout=net.timeout), url
        conn = http.client.HTTPSConnection(p.hostname, p.port or 80, timeout=net.timeout,
                                           context=net.ssl_context())
        conn.set_tunnel(host, port or 443)
        return conn, target
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, port or 443, timeout=net.timeout, context=net.ssl_context()), target
    return http.client.HTTPConnection(host, port or 80, timeout=net.timeout), target


class Remote:
    """One package URL: its length and validator, pinned by the first answer."""

    def __init__(self, url, net=None):
        self.url = url
        self.net = net or Net()
        self.length = None
        self.etag = None
        self.modified = None
        self.pinned = False

    def get(self, offset):
        """A response positioned at offset (following redirects). Raises DownloadError for
        answers no retry can mend, OSError/HTTPException for those one may."""
        url = self.url
        for _ in range(REDIRECTS + 1):
            conn, target = _connection(url, self.net)
            conn.request("GET", target, headers=self._headers(offset))
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urljoin(url, resp.getheader("Location"))
                conn.close()
                continue
            try:
                self._check(resp, offset)
            except BaseException:
                conn.close()
                raise
            return conn, resp
        raise self.give_up("more than %d redirects" % REDIRECTS)

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
            raise ChangedError("%s changed on the server since it was first read (precondition failed)" % self.url)
        if status in RETRY_STATUS:
            raise http.client.HTTPException("HTTP %d %s" % (status, resp.reason))
        if status not in (200, 206):
            raise self.give_up("HTTP %d %s" % (status, resp.reason))
        if status == 200 and offset:
            raise ChangedError("%s: the server sent the whole file to a ranged request (no Range support, or "
                               "the file changed); cannot resume" % self.url)
        total = resp.getheader("Content-Length")
        if status == 206:
            rng, _, total = (resp.getheader("Content-Range") or "").partition(" ")[2].partition("/")
            start = rng.partition("-")[0]
            if start != str(offset):
                raise ChangedError("%s: the server answered a range from byte %s, asked %d" % (self.url, start, offset))
        length = int(total) if total and total.isdigit() else None
        self._pin(resp, length)

    def _pin(self, resp, length):
        etag, modified = resp.getheader("ETag"), resp.getheader("Last-Modified")
        if not self.pinned:
            self.length, self.etag, self.modified, self.pinned = length, etag, modified, True
            return
        if self.length is None:
            self.length = length  # a first answer without a length (chunked): a range's total gives it
        if (self.etag and etag and etag != self.etag) or (length is not None and length != self.length) or \
                (not self.etag and self.modified and modified and modified != self.modified):
            raise ChangedError("%s changed on the server since it was first read (ETag %s, %s bytes; was %s, %s "
                               "bytes)" % (self.url, etag, length, self.etag, self.length))

    def give_up(self, why):
        return DownloadError("cannot download %s: %s" % (self.url, why))


def _why(exc, net):
    if isinstance(exc, socket.timeout):
        return "no answer within %g s" % net.timeout
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection ended early"
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
        self.deadline = time.monotonic() + remote.net.time_limit  # per pass
        self._connect()

    def readable(self):
        return True

    def _connect(self):
        r = self.remote
        while True:
            try:
                self.conn, self.resp = r.get(self.offset)
                return
            except CERT_ERRORS as exc:
                raise r.give_up("the server's certificate is not trusted (%s)" % exc.verify_message) from None
            except DownloadError:
                raise
            except (OSError, http.client.HTTPException) as exc:
                self._failed(exc)

    def _failed(self, exc):
        """One failed attempt: back off (only after attempts that got nothing) or give up."""
        self._drop()
        r = self.remote
        self.failures += 1
        if self.failures > r.net.retries:
            raise r.give_up(_why(exc, r.net)) from None
        wait = 0 if self.failures == 1 else min(8.0, 0.5 * 2 ** (self.failures - 2))
        if time.monotonic() + wait > self.deadline:
            raise r.give_up("%s; time limit of %g s reached" % (_why(exc, r.net), r.net.time_limit)) from None
        if wait:
            time.sleep(wait)

    def _drop(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = self.resp = None

    def readinto(self, b):
        while True:
            length = self.remote.length
            if length is not None and self.offset >= length:
                return 0
            if time.monotonic() > self.deadline:
                raise self.remote.give_up("time limit of %g s reached" % self.remote.net.time_limit)
            try:
                if self.resp is None:
                    self._connect()
                n = self.resp.readinto(b)
                if n == 0 and length is None:
                    return 0
                if n == 0:
                    raise http.client.IncompleteRead(b"", length - self.offset)
            except DownloadError:
                raise
            except (OSError, http.client.HTTPException) as exc:
                self._failed(exc)
                continue
            self.offset += n
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
