"""A fault-injecting HTTP reverse proxy of the tests' own, on loopback, to put in front of moto's S3 server.

    with FaultProxy(moto_url, error_rate=0.2, seed=1) as proxy:
        fs = s3fs.S3FileSystem(skip_instance_cache=True, key="testing", secret="testing",
                               client_kwargs={"endpoint_url": proxy.url})
        ...

Each request is forwarded as received (method, path and query, headers, body) to the upstream, and the
upstream's status, headers and body go back to the client. The Host header stays as the client sent it:
SigV4 signs it, so rewriting it would break the signature (``rewrite_host=True`` does so, for a test that
shows exactly that). The request body is read whole first, whatever its framing (Content-Length, or
``Transfer-Encoding: chunked``, de-chunked here and forwarded with a Content-Length; an ``aws-chunked``
Content-Encoding is payload, not framing, and passes through untouched). ``Expect: 100-continue`` is
answered here (the standard library's handler sends the 100 before the body is read) and not forwarded.

Faults, decided per request, in this order:

* rules (`FaultRule`): the first rule whose method and path regex match, and that has times left, answers
  its status, always (``times=None``) or for its first ``times`` matches;
* otherwise, with probability ``error_rate`` (a seeded ``random.Random``, under a lock), an S3-style error
  with a status drawn from ``statuses``; a share ``fault_after_forward_share`` of those is answered only
  after the request was forwarded and applied upstream (the client sees an error for a write that took
  effect, the nastier real case), the rest without forwarding.

Error bodies are S3's XML (``<Error><Code>SlowDown</Code>...``) with a Content-Length, so botocore parses
them and treats 500/503 as retryable. The proxy logs nothing. It is bounded: it stops by itself after
``max_seconds`` (a daemon timer), and all its threads are daemon threads, so a failed test cannot leave it
running; ``stop()`` also closes the client connections still open and joins the handler threads.
"""

from __future__ import annotations

import http.client
import http.server
import random
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# S3 error code for each injected status (others get "InjectedFault").
ERROR_CODES = {
    400: "BadRequest",
    403: "AccessDenied",
    404: "NoSuchKey",
    409: "OperationAborted",
    500: "InternalError",
    502: "BadGateway",
    503: "SlowDown",
    504: "GatewayTimeout",
}

# Connection-level headers: never forwarded in either direction (the proxy frames each hop itself).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "transfer-encoding", "upgrade", "expect",
})


@dataclass
class FaultRule:
    """Requests matching ``method`` (None: any) and ``path_regex`` (``re.search`` on the request target,
    path and query as the client sent them) get ``status``: forever (``times=None``) or for the first
    ``times`` matches. ``after_forward=True`` forwards the request first (upstream applies it) and answers
    the error anyway. ``code`` overrides the S3 error code (default: from the status). ``hits`` counts
    the faults this rule injected."""

    method: str | None = None
    path_regex: str = ""
    status: int = 500
    times: int | None = None
    after_forward: bool = False
    code: str | None = None
    hits: int = field(default=0, init=False)

    def __post_init__(self):
        self._regex = re.compile(self.path_regex)

    def matches(self, method: str, target: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self._regex.search(target) is not None


@dataclass(frozen=True)
class RequestRecord:
    """One request as the proxy saw it: what it decided (``fault`` is None when forwarded untouched,
    otherwise "rule", "rule-after", "before", "after", or "upstream-down" when forwarding failed: 502)
    and the status the client got."""

    method: str
    target: str
    headers: dict
    body_len: int
    status: int
    fault: str | None


def error_body(status: int, code: str | None = None, message: str = "injected", resource: str = "",
               request_id: str = "") -> bytes:
    code = code or ERROR_CODES.get(status, "InjectedFault")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
            f'</Message><Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>'
            ).encode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # we join our own handler threads in stop()
    allow_reuse_address = True

    def __init__(self, proxy: FaultProxy):
        self.proxy = proxy
        self.conn_lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.handler_threads: set[threading.Thread] = set()
        self.closing = False
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        with self.conn_lock:
            if self.closing:
                self.shutdown_request(request)
                return
            self.conns.add(request)
            t = threading.Thread(target=self._run, args=(request, client_address), daemon=True,
                                 name="fault-proxy-conn")
            self.handler_threads.add(t)
        t.start()

    def _run(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            pass  # a client that went away mid-request, or stop() closing its socket
        finally:
            with self.conn_lock:
                self.conns.discard(request)
                self.handler_threads.discard(threading.current_thread())
            self.shutdown_request(request)

    def handle_error(self, request, client_address):
        pass  # silent


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and the 100-continue answer for `Expect`
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms Nagle/delayed-ACK stall
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("client closed inside a chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers of the HTTP framing: dropped
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)  # CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self):
        proxy = self.server.proxy
        body = self._read_body()
        method, target = self.command, self.path
        decision, status, code = proxy._decide(method, target)
        upstream = None
        if decision is None or decision.endswith("after"):
            try:
                upstream = proxy._forward(method, target, self.headers, body)
            except (OSError, http.client.HTTPException):  # upstream refused, reset, garbled
                upstream = None
                decision, status, code = "upstream-down", 502, "BadGateway"
        # Recorded before answering: when the client has its response, the record is there.
        if decision is None:
            proxy._record(method, target, self.headers, len(body), upstream[0], None)
            self._send_upstream(*upstream)
        else:
            proxy._record(method, target, self.headers, len(body), status, decision)
            self._send_error(status, code, target)

    def _send_upstream(self, status, reason, headers, data):
        self.send_response_only(status, reason)
        has_length = False
        for k, v in headers:
            lk = k.lower()
            if lk in HOP_BY_HOP:
                continue
            if lk == "content-length":
                if self.command == "HEAD" or status in (204, 304):
                    has_length = True
                    self.send_header(k, v)  # the length GET would give: s3fs's info() reads it
                continue
            self.send_header(k, v)
        if not has_length and not (self.command == "HEAD" or status in (204, 304) or status < 200):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status, code, target):
        request_id = uuid.uuid4().hex[:16].upper()
        data = error_body(status, code, resource=target.split("?", 1)[0], request_id=request_id)
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        self.send_header("Date", self.date_time_string())
        self.send_header("Server", "fault-proxy")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class FaultProxy:
    """See the module docstring. ``url``: "http://127.0.0.1:PORT". Counters (thread-safe):
    ``requests`` (all requests received), ``faults_injected`` (rules and random faults together);
    ``records``: a `RequestRecord` per request, in arrival order."""

    def __init__(self, upstream_url: str, *, error_rate: float = 0.0, seed: int = 0,
                 statuses=(503, 500), rules=(), max_seconds: float = 600,
                 fault_after_forward_share: float = 0.5, rewrite_host: bool = False,
                 upstream_timeout: float = 60):
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream_url!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.statuses = tuple(statuses)
        self.rules = list(rules)
        self.max_seconds = max_seconds
        self.fault_after_forward_share = fault_after_forward_share
        self.rewrite_host = rewrite_host
        self.upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._error_rate = float(error_rate)
        self._requests = 0
        self._faults = 0
        self.records: list[RequestRecord] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._stop_lock = threading.Lock()
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fault-proxy")
        self._thread.start()
        self._timer = threading.Timer(self.max_seconds, self.stop)
        self._timer.daemon = True
        self._timer.name = "fault-proxy-timer"
        self._timer.start()
        self.started_at = time.monotonic()
        return self

    def stop(self, join_timeout: float = 10) -> None:
        """Stop serving, close the listening socket and every open client connection, join the threads.
        Idempotent; also what the max_seconds timer calls."""
        with self._stop_lock:
            server = self._server
            if server is None or self.stopped_at is not None:
                return
            if self._timer is not None and self._timer is not threading.current_thread():
                self._timer.cancel()
            server.shutdown()
            server.server_close()
            with server.conn_lock:
                server.closing = True
                conns, threads = list(server.conns), list(server.handler_threads)
            for c in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            deadline = time.monotonic() + join_timeout
            for t in [self._thread, self._timer, *threads]:
                if t is not None and t is not threading.current_thread():
                    t.join(max(0.0, deadline - time.monotonic()))
            self.stopped_at = time.monotonic()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None and self.stopped_at is None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FaultProxy not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- knobs and counters ----------------------------------------------------------------------
    def set_error_rate(self, rate: float) -> None:
        with self._lock:
            self._error_rate = float(rate)

    @property
    def error_rate(self) -> float:
        with self._lock:
            return self._error_rate

    def add_rule(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self.rules.clear()

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def faults_injected(self) -> int:
        with self._lock:
            return self._faults

    def reset_counters(self) -> None:
        with self._lock:
            self._requests = self._faults = 0
            self.records.clear()

    # --- internals -------------------------------------------------------------------------------
    def _decide(self, method: str, target: str):
        """(decision, status, code): decision None (forward untouched), "rule" or "rule-after" (a rule,
        answered before / after forwarding), "before" or "after" (a random fault)."""
        with self._lock:
            self._requests += 1
            for rule in self.rules:
                if (rule.times is None or rule.hits < rule.times) and rule.matches(method, target):
                    rule.hits += 1
                    self._faults += 1
                    return ("rule-after" if rule.after_forward else "rule"), rule.status, rule.code
            if self._error_rate > 0 and self._rng.random() < self._error_rate:
                self._faults += 1
                status = self._rng.choice(self.statuses)
                after = self._rng.random() < self.fault_after_forward_share
                return ("after" if after else "before"), status, None
        return None, None, None

    def _forward(self, method, target, headers, body):
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port,
                                          timeout=self.upstream_timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            host_seen = False
            for k, v in headers.items():
                lk = k.lower()
                if lk in HOP_BY_HOP or lk == "content-length":
                    continue
                if lk == "host":
                    host_seen = True
                    if self.rewrite_host:
                        v = f"{self.upstream_host}:{self.upstream_port}"
                conn.putheader(k, v)
            if not host_seen:
                conn.putheader("Host", f"{self.upstream_host}:{self.upstream_port}")
            if body or method in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = b"" if method == "HEAD" else resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _record(self, method, target, headers, body_len, status, fault):
        rec = RequestRecord(method, target, dict(headers.items()), body_len, status, fault)
        with self._lock:
            self.records.append(rec)
