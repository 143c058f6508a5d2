"""One writer per output directory: a driver claims ``<out>`` with its run id before it writes anything.

Under ``<out>/_claim/``, generation n is ``<n:08d>.json`` (run_id, host, pid, started, timeout_s, info, token),
created EXCLUSIVELY: of drivers creating one generation exactly one wins. Its owner overwrites ``<n>.heartbeat``
({run_id, time, beats}) every interval from a daemon thread, and writes ``<n>.released`` when done. ``acquire``
reads the highest n: none or released -> create n+1 (0 first); no beat (nor `started`; an unreadable claim
counts as stale) within the claim's timeout -> create n+1, a takeover; else OutputClaimedError naming the other
run. A lost create decides again; a claim is live from creation, so of drivers started together one wins.
``check()``, called before the final records, beats once, then raises ClaimLostError if a later generation
exists (the beat thread checks too).

Guarantee: one live claim at a time; a claim is taken over only after its beats stopped reaching storage for
its timeout (the owner's, or the taker's if longer). Limits:
- Ages compare the owner's clock (a beat's `time`) with the reader's: skew between them shifts the timeout by
  as much. Keep the timeout (default 60 s) far above it (NTP: milliseconds) and above storage stalls.
- A lease, not a fence: storage does not refuse a taken-over driver's writes. One paused (or cut off) past its
  timeout learns it at its next ``check()`` and must stop; until then it may still write (parts are
  idempotent). A passing ``check()`` leaves it about timeout - skew - a taker's read-to-create delay.
- Exclusive create needs an atomic store: local POSIX (hard link of a complete temp file; a mount without hard
  links fails) or S3 conditional PUT (If-None-Match: *; AWS since 2024, moto) via s3fs ``pipe_file(mode=
  "create")``. fsspec's generic create modes check, then write (a race): other stores raise ClaimStoreError.
  NFS: link() is atomic there too; attribute caching can delay a reader's view of a beat by actimeo (seconds).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import socket
import threading
import time
import uuid
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from model.errors import SamstreamError

CLAIM_DIR = "_claim"  # under the output root; workers/output.py lists it in the layout
_NAME = re.compile(r"^(\d{8})\.(json|heartbeat|released)$")


class OutputClaimedError(SamstreamError):
    """Another live run holds the output."""

    def __init__(self, url: str, other_run_id: str, host: str, pid: int, age_s: float):
        self.url, self.other_run_id, self.host, self.pid, self.age_s = url, other_run_id, host, pid, age_s
        super().__init__(f"output {url} is being written by run {other_run_id} (host {host}, pid {pid}, "
                         f"heartbeat {age_s:.1f} s ago); wait for it to finish, or use another --out")


class ClaimLostError(SamstreamError):
    """This run's claim was taken over: its heartbeats stopped reaching storage for the timeout."""

    def __init__(self, url: str, run_id: str, by_run_id: str):
        self.url, self.run_id, self.by_run_id = url, run_id, by_run_id
        super().__init__(f"output {url} was taken over by run {by_run_id} while run {run_id} was writing it "
                         f"(its heartbeats stopped reaching storage); run {run_id} must not write more")


class ClaimStoreError(SamstreamError):
    """The output's filesystem cannot create a file exclusively (atomically)."""


def _require_exclusive(fs: Any, url: str) -> None:
    s3 = {"s3", "s3a"} & ({fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol))
    if isinstance(fs, LocalFileSystem) or (s3 and "mode" in inspect.signature(fs._pipe_file).parameters):
        return
    raise ClaimStoreError(f"output {url}: {type(fs).__name__} cannot create a file exclusively, so two drivers "
                          f"could both claim it; use a local path or s3:// (s3fs with pipe_file mode='create')")


def _write(fs: Any, path: str, data: bytes, exclusive: bool) -> None:
    """Write `path` whole (readers see all of it or nothing); exclusive: FileExistsError if it exists."""
    if not isinstance(fs, LocalFileSystem):
        return fs.pipe_file(path, data, mode="create" if exclusive else "overwrite")
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb", buffering=0) as f:
        f.write(data)
        os.fsync(f.fileno())
    try:  # a hard link is an atomic exclusive create of a file already complete
        (os.link if exclusive else os.replace)(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(fs: Any, path: str) -> dict | None:
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError):
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: one PID space per host
        return None


def _driver_gone(claim: dict) -> bool:
    """True when the claim's driver ran on this host, in this PID namespace, and its process has exited (a
    killed driver rerun on the same machine need not wait for the timeout). Containers that share a hostname
    but not a PID namespace never match, so a live driver elsewhere is never taken for a dead one."""
    if claim.get("host") != socket.gethostname() or claim.get("pid_ns") != _pid_namespace():
        return False
    try:
        os.kill(int(claim["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, KeyError, TypeError, ValueError):  # alive but not ours, or no pid recorded
        return False
    return False


class OutputClaim:
    """The claim of one output by one run; see the module docstring."""

    def __init__(self, fs: Any, root: str, url: str, run_id: str, timeout_s: float, interval_s: float):
        self.fs, self.dir, self.url, self.run_id = fs, f"{root.rstrip('/')}/{CLAIM_DIR}", url, run_id
        self.timeout_s, self.interval_s = timeout_s, interval_s
        self.generation, self.took_over, self.lost_to = -1, None, None
        self.last_error: Exception | None = None  # the heartbeat thread's last failure, if any
        self._beats, self._lock, self._stop = 0, threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"output-claim-{run_id}", daemon=True)

    @classmethod
    def acquire(cls, fs: Any, root: str, url_for_messages: str, run_id: str, timeout_s: float = 60.0,
                interval_s: float | None = None, info: dict | None = None) -> OutputClaim:
        interval = timeout_s / 4 if interval_s is None else interval_s
        if not 0 < interval < timeout_s:
            raise ValueError(f"interval_s {interval} must be > 0 and < timeout_s {timeout_s}")
        _require_exclusive(fs, url_for_messages)
        self = cls(fs, root, url_for_messages, run_id, timeout_s, interval)
        if isinstance(fs, LocalFileSystem):
            os.makedirs(self.dir, exist_ok=True)
        for _ in range(50):
            n, stale = self._decide()
            body = {"run_id": run_id, "host": socket.gethostname(), "pid_ns": _pid_namespace(), "pid": os.getpid(),
                    "started": time.time(),
                    "timeout_s": timeout_s, "generation": n, "info": info or {}, "token": uuid.uuid4().hex}
            if not self._create(n, body):
                continue  # another driver's claim n exists: decide again
            self.generation, self.took_over = n, stale
            self._thread.start()
            return self
        raise SamstreamError(f"output {url_for_messages}: no claim after 50 tries (claims keep changing)")

    def _create(self, n: int, body: dict) -> bool:
        """Whether the claim file n that exists is ours. FileExistsError is a loss unless it met our own PUT,
        retried after a lost reply (412); other errors (a lost reply; S3's 409 for concurrent conditional
        PUTs) are settled the same way, by the token in the file."""
        path = self._path(n, "json")
        try:
            _write(self.fs, path, json.dumps(body).encode(), exclusive=True)
            return True
        except OSError as e:
            lost = isinstance(e, FileExistsError)
            time.sleep(0 if lost else 0.2)
            if (got := _read(self.fs, path)) is None and not lost:
                raise
            return (got or {}).get("token") == body["token"]

    def _path(self, n: int, kind: str) -> str:
        return f"{self.dir}/{n:08d}.{kind}"

    def _generations(self) -> dict[int, set[str]]:
        """{n: the kinds of file present} for every generation with a claim file."""
        self.fs.invalidate_cache(self.dir)
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.dir, detail=False)]
        except FileNotFoundError:
            return {}
        gens: dict[int, set[str]] = {}
        for m in filter(None, map(_NAME.match, names)):
            gens.setdefault(int(m[1]), set()).add(m[2])
        return {n: kinds for n, kinds in gens.items() if "json" in kinds}

    def _decide(self) -> tuple[int, str | None]:
        """The generation to create and the run it takes over; OutputClaimedError if a claim is live."""
        gens = self._generations()
        n = max(gens, default=-1)
        if n < 0 or "released" in gens[n]:
            return n + 1, None
        claim = _read(self.fs, self._path(n, "json")) or {}
        beat = _read(self.fs, self._path(n, "heartbeat")) or {}
        age = time.time() - max(float(claim.get("started", 0)), float(beat.get("time", 0)))
        if age > max(self.timeout_s, float(claim.get("timeout_s", 0))) or _driver_gone(claim):
            return n + 1, claim.get("run_id", "?")
        raise OutputClaimedError(self.url, claim.get("run_id", "?"), claim.get("host", "?"),
                                 int(claim.get("pid", -1)), max(age, 0.0))

    def _taken_by(self) -> str | None:
        """The run that took this claim over (the next generation's), or None while it is ours."""
        later = [n for n in self._generations() if n > self.generation]
        return (_read(self.fs, self._path(min(later), "json")) or {}).get("run_id", "?") if later else None

    def _refresh(self) -> None:
        """Beat once, then look for a later generation."""
        with self._lock:
            self._beats += 1
            beat = {"run_id": self.run_id, "time": time.time(), "beats": self._beats}
            _write(self.fs, self._path(self.generation, "heartbeat"), json.dumps(beat).encode(), exclusive=False)
        self.lost_to = self.lost_to or self._taken_by()

    def _run(self) -> None:
        while self.lost_to is None and not self._stop.wait(self.interval_s):
            try:
                self._refresh()
            except Exception as e:  # storage unreachable: keep trying; others take over after the timeout
                self.last_error = e

    def check(self) -> None:
        """Raise ClaimLostError if another run took the output over; else refresh the heartbeat now."""
        if self.lost_to is None:
            self._refresh()
        if self.lost_to is not None:
            raise ClaimLostError(self.url, self.run_id, self.lost_to)

    def release(self) -> None:
        """Stop beating and mark the claim released, so the next driver may claim at once. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(self.timeout_s)
        if self.lost_to is None:
            body = {"run_id": self.run_id, "time": time.time()}
            _write(self.fs, self._path(self.generation, "released"), json.dumps(body).encode(), exclusive=False)

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release()
        except Exception as e:  # storage down at the very end: the claim then lapses after its timeout
            self.last_error = e
