"""One writer per output (workers/output_claim.py), on a local directory and on S3 (moto's server on loopback):
racing drivers (threads and processes), release, takeover of a killed driver, a paused driver's check()."""

import json
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import fsspec
import fsspec.implementations.local
import pytest

from model.errors import SamstreamError
from workers import output_claim
from workers.output_claim import ClaimLostError, ClaimStoreError, OutputClaim, OutputClaimedError

REPO = Path(__file__).resolve().parents[1]
BUCKET = "claims-tests"

# A driver in its own process. Prints "ready", waits for "go", acquires, prints the outcome as JSON; then on
# each "check" line prints check()'s outcome; "release" (or EOF) releases and exits.
CHILD = r"""
import json, os, sys, types
# The claim needs model.errors only: a bare `model` package skips model/__init__ (torch), so that eight
# children start in seconds.
sys.modules["model"] = types.ModuleType("model")
sys.modules["model"].__path__ = [os.path.join(os.getcwd(), "model")]
import fsspec
from workers.output_claim import ClaimLostError, OutputClaim, OutputClaimedError
url, run_id, timeout, interval = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
def say(**kw):
    print(json.dumps(kw), flush=True)
say(ready=True)
sys.stdin.readline()
try:
    claim = OutputClaim.acquire(fs, root, url, run_id, timeout_s=timeout, interval_s=interval)
except OutputClaimedError as e:
    say(refused=vars(e))
    sys.exit(0)
say(won=claim.generation)
for line in sys.stdin:
    if line.strip() != "check":
        break
    try:
        claim.check()
        say(ok=True)
    except ClaimLostError as e:
        say(lost=vars(e))
claim.release()
"""


class Child:
    def __init__(self, url: str, run_id: str, timeout: float = 30.0, interval: float = 1.0):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, url, run_id, str(timeout), str(interval)],
                                     cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float = 60.0) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        assert line, f"child said nothing (exit {self.proc.poll()})"
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    """(fs, root, url) of a fresh output location: a local directory, or a prefix in a bucket on moto."""
    if request.param == "local":
        url = str(tmp_path / "out")
        return fsspec.filesystem("file"), url, url
    import s3fs

    request.getfixturevalue("s3_server")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists(BUCKET):  # (this also connects: fs.session exists from here on)
        fs.mkdir(BUCKET)
    root = f"{BUCKET}/{uuid.uuid4().hex[:8]}/out"
    return fs, root, f"s3://{root}"


def _new_fs(fs):
    """Another driver's own filesystem object (no shared listing cache; S3: the botocore session is shared,
    only to skip parsing the service model again)."""
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return type(fs)(skip_instance_cache=True)
    return type(fs)(skip_instance_cache=True, session=fs.session)


def _acquire(fs, root, url, run_id, **kw):
    return OutputClaim.acquire(_new_fs(fs), root, url, run_id, **kw)


def _read_json(fs, path):
    fs.invalidate_cache()
    return json.loads(fs.cat_file(path))


def test_threads_racing_exactly_one_wins_then_release_frees_it(out):
    fs, root, url = out
    n = 8
    barrier, results = threading.Barrier(n), {}

    def driver(i):
        mine = _new_fs(fs)
        barrier.wait()
        try:
            results[i] = OutputClaim.acquire(mine, root, url, f"run{i}", timeout_s=30, info={"cmd": "segment"})
        except OutputClaimedError as e:
            results[i] = e

    threads = [threading.Thread(target=driver, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [r for r in results.values() if isinstance(r, OutputClaim)]
    assert len(results) == n and len(winners) == 1
    (winner,) = winners
    assert winner.generation == 0 and winner.took_over is None
    for r in results.values():
        if r is not winner:
            assert r.other_run_id == winner.run_id and r.url == url and r.pid == os.getpid()
            assert f"by run {winner.run_id} " in str(r) and "\n" not in str(r)
    claim = _read_json(fs, f"{root}/_claim/00000000.json")
    assert claim["run_id"] == winner.run_id and claim["info"] == {"cmd": "segment"}
    winner.check()  # still ours
    with pytest.raises(OutputClaimedError):
        _acquire(fs, root, url, "late", timeout_s=30)
    winner.release()
    with _acquire(fs, root, url, "next", timeout_s=30) as again:  # released: claimable at once
        assert again.generation == 1 and again.took_over is None
    assert _read_json(fs, f"{root}/_claim/00000001.released")["run_id"] == "next"


def test_processes_started_together_exactly_one_wins(out):
    fs, root, url = out
    children = [Child(url, f"proc{i}") for i in range(8)]
    try:
        for c in children:
            assert c.recv() == {"ready": True}
        for c in children:  # the barrier: all are ready, then all go at once
            c.send("go")
        outcomes = {f"proc{i}": c.recv() for i, c in enumerate(children)}
        won = [r for r, o in outcomes.items() if "won" in o]
        assert len(won) == 1 and outcomes[won[0]] == {"won": 0}, outcomes
        for r, o in outcomes.items():
            if r != won[0]:
                assert o["refused"]["other_run_id"] == won[0] and o["refused"]["url"] == url
        holder = children[int(won[0][4:])]
        holder.send("check")
        assert holder.recv() == {"ok": True}
        holder.send("release")
        assert holder.proc.wait(30) == 0
        with _acquire(fs, root, url, "after", timeout_s=30) as claim:
            assert claim.generation == 1
    finally:
        for c in children:
            c.close()


def _poll_until_claimed(fs, root, url, run_id, timeout, last_beat):
    """Acquire until it succeeds; every refusal must come while the last beat was within the timeout, and
    the takeover must come after it."""
    refusals, mine = 0, _new_fs(fs)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            claim = OutputClaim.acquire(mine, root, url, run_id, timeout_s=timeout)
        except OutputClaimedError as e:
            assert e.age_s <= timeout
            refusals += 1
            time.sleep(0.2)
            continue
        started = _read_json(fs, f"{root}/_claim/{claim.generation:08d}.json")["started"]
        assert started - last_beat() > timeout  # not before the timeout
        return claim, refusals
    raise AssertionError("never taken over")


def test_killed_driver_is_taken_over_after_the_timeout_and_not_before(out, monkeypatch):
    fs, root, url = out
    # As if the driver ran on another machine: its process cannot be looked up, only its heartbeats.
    monkeypatch.setattr(output_claim, "_driver_gone", lambda claim: False)
    timeout = 3.0  # a lease this short needs beats to land within it: on a loaded CI box 2 s was too short
    child = Child(url, "victim", timeout=timeout, interval=0.25)
    try:
        assert child.recv() == {"ready": True}
        child.send("go")
        assert child.recv() == {"won": 0}
        beat = f"{root}/_claim/00000000.heartbeat"
        for _ in range(2):  # live for longer than the timeout: its heartbeats keep it
            time.sleep(0.6 * timeout)
            with pytest.raises(OutputClaimedError) as refused:
                _acquire(fs, root, url, "early", timeout_s=timeout)
            assert refused.value.other_run_id == "victim" and refused.value.age_s < timeout
        assert _read_json(fs, beat)["beats"] >= 2
        child.proc.send_signal(signal.SIGKILL)
        child.proc.wait(30)
        claim, _ = _poll_until_claimed(fs, root, url, "taker", timeout, lambda: _read_json(fs, beat)["time"])
        assert claim.generation == 1 and claim.took_over == "victim"
        claim.release()
    finally:
        child.close()


def test_paused_driver_learns_at_check_that_it_was_taken_over(out):
    fs, root, url = out
    timeout = 1.5
    child = Child(url, "sleeper", timeout=timeout, interval=0.3)
    try:
        assert child.recv() == {"ready": True}
        child.send("go")
        assert child.recv() == {"won": 0}
        child.proc.send_signal(signal.SIGSTOP)  # paused: its heartbeats stop reaching storage

        def last_beat():
            p = f"{root}/_claim/00000000"
            return _read_json(fs, f"{p}.heartbeat")["time"] if fs.exists(f"{p}.heartbeat") else \
                _read_json(fs, f"{p}.json")["started"]

        claim, _ = _poll_until_claimed(fs, root, url, "taker", timeout, last_beat)
        assert claim.took_over == "sleeper"
        child.proc.send_signal(signal.SIGCONT)
        child.send("check")
        assert child.recv() == {"lost": {"url": url, "run_id": "sleeper", "by_run_id": "taker"}}
        claim.check()  # the taker still owns it
        child.send("release")
        assert child.proc.wait(30) == 0
        with pytest.raises(OutputClaimedError, match="by run taker "):  # the loser's release freed nothing
            _acquire(fs, root, url, "third", timeout_s=timeout)
        claim.release()
    finally:
        child.close()


def test_errors_round_trip_pickle_and_read_in_one_line():
    claimed = OutputClaimedError("s3://b/out", "1a2b3c4d", "h", 123, 2.13)
    lost = ClaimLostError("/x/out", "1a2b3c4d", "5e6f7a8b")
    assert str(claimed) == ("output s3://b/out is being written by run 1a2b3c4d (host h, pid 123, heartbeat "
                            "2.1 s ago); wait for it to finish, or use another --out")
    for err, fields in [(claimed, ("url", "other_run_id", "host", "pid", "age_s")),
                        (lost, ("url", "run_id", "by_run_id"))]:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and isinstance(back, SamstreamError)
        assert str(back) == str(err) and "\n" not in str(err)
        assert all(getattr(back, f) == getattr(err, f) for f in fields)
    assert "5e6f7a8b" in str(lost) and "1a2b3c4d" in str(lost)


def test_store_without_exclusive_create_is_refused(tmp_path):
    fs = fsspec.filesystem("memory")
    with pytest.raises(ClaimStoreError, match="cannot create a file exclusively"):
        OutputClaim.acquire(fs, "/out", "memory://out", "r1")
    with pytest.raises(ValueError, match="interval_s"):
        OutputClaim.acquire(fsspec.filesystem("file"), str(tmp_path), str(tmp_path), "r1", 1.0, 2.0)


def test_own_claim_put_retried_after_a_lost_reply_still_wins(s3_server):
    """The store applied our conditional PUT but the reply was lost (500): botocore retries and meets 412
    (FileExistsError) on our own claim file. The token in the file shows it is ours."""
    import s3fs

    fault_proxy = pytest.importorskip("tests.fault_proxy")
    rule = fault_proxy.FaultRule(method="PUT", path_regex=r"_claim/00000000\.json", status=500, times=1,
                                 after_forward=True)
    with fault_proxy.FaultProxy(s3_server, rules=[rule]) as proxy:
        fs = s3fs.S3FileSystem(skip_instance_cache=True, client_kwargs={"endpoint_url": proxy.url})
        if not fs.exists(BUCKET):
            fs.mkdir(BUCKET)
        root = f"{BUCKET}/{uuid.uuid4().hex[:8]}/out"
        with OutputClaim.acquire(fs, root, f"s3://{root}", "r1", timeout_s=30) as claim:
            assert rule.hits == 1 and claim.generation == 0
            claim.check()
        with pytest.raises(OutputClaimedError, match="by run r2 "):
            with OutputClaim.acquire(fs, root, f"s3://{root}", "r2", timeout_s=30):
                OutputClaim.acquire(fs, root, f"s3://{root}", "r3", timeout_s=30)


def test_a_killed_driver_on_this_host_is_taken_over_at_once(out):
    """Its process is gone from this host's PID namespace: no need to wait for a 60 s timeout."""
    fs, root, url = out
    child = Child(url, "victim", timeout=60.0, interval=1.0)
    try:
        assert child.recv() == {"ready": True}
        child.send("go")
        assert child.recv() == {"won": 0}
        with pytest.raises(OutputClaimedError):  # alive: refused
            _acquire(fs, root, url, "early", timeout_s=60.0)
        child.proc.send_signal(signal.SIGKILL)
        child.proc.wait(30)
        claim = _acquire(fs, root, url, "taker", timeout_s=60.0)
        assert claim.generation == 1 and claim.took_over == "victim"
        claim.release()
    finally:
        child.close()
