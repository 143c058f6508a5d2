"""The tests' fault-injecting proxy (tests/fault_proxy.py) in front of moto's S3 server, driven by s3fs."""

import errno
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.fault_proxy import FaultProxy, FaultRule

# Fast retries for the tests: botocore's backoff base is random.random() seconds in both modes (legacy,
# the default, and standard), doubling per attempt; more attempts make a 20 % fault rate survivable.
# (botocore's `max_attempts` counts retries, `total_max_attempts` attempts: the first one included.)
FAST_RETRIES = {"retries": {"total_max_attempts": 10, "mode": "standard"}}
FEW_RETRIES = {"retries": {"total_max_attempts": 2, "mode": "standard"}}


def make_fs(proxy, config_kwargs=None, key="testing", secret="testing"):
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, key=key, secret=secret,
                             client_kwargs={"endpoint_url": proxy.url},
                             config_kwargs=config_kwargs or {})


def new_bucket(fs) -> str:
    name = f"fp-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return name


def proxy_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fault-proxy") and t.is_alive()]


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def fast_backoff(monkeypatch):
    """botocore's standard-mode backoff at most 20 ms (its base is up to 1 s per attempt, doubling)."""
    import random

    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount",
                        lambda self, context: random.random() * 0.02)


def test_round_trip_byte_exact(s3_server):
    with FaultProxy(s3_server) as proxy:
        fs = make_fs(proxy)
        bucket = new_bucket(fs)
        small, big = b"hello \x00\xff world", os.urandom(7 * 2**20 + 13)
        fs.pipe(f"{bucket}/a/small.bin", small)
        fs.pipe(f"{bucket}/a/big.bin", big)  # one PutObject of 7 MB
        with fs.open(f"{bucket}/a/multi.bin", "wb", block_size=5 * 2**20) as f:  # multipart: 2 parts
            f.write(big)
            f.write(big[::-1])
        assert fs.cat(f"{bucket}/a/small.bin") == small
        assert fs.cat(f"{bucket}/a/big.bin") == big
        assert fs.cat(f"{bucket}/a/multi.bin") == big + big[::-1]
        assert fs.cat_file(f"{bucket}/a/big.bin", start=1000, end=3000) == big[1000:3000]  # Range
        assert fs.info(f"{bucket}/a/big.bin")["size"] == len(big)  # HEAD's Content-Length passed on
        assert sorted(fs.ls(f"{bucket}/a", detail=False)) == [
            f"{bucket}/a/big.bin", f"{bucket}/a/multi.bin", f"{bucket}/a/small.bin"]
        fs.rm_file(f"{bucket}/a/small.bin")  # DeleteObject: DELETE (fs.rm uses POST ?delete)
        fs.rm(f"{bucket}/a/big.bin")
        fs.invalidate_cache()
        assert fs.ls(f"{bucket}/a", detail=False) == [f"{bucket}/a/multi.bin"]

        assert proxy.faults_injected == 0 and proxy.requests == len(proxy.records) > 0
        assert all(r.fault is None for r in proxy.records)
        methods = {r.method for r in proxy.records}
        assert {"GET", "PUT", "POST", "HEAD", "DELETE"} <= methods
        # The Host reached moto as the client sent (and signed) it: the proxy's own address.
        assert {r.headers["Host"] for r in proxy.records} == {proxy.url.removeprefix("http://")}
        # What s3fs/aiobotocore send over http: Content-Length bodies, `Expect: 100-continue` on every
        # PutObject/UploadPart (even 17 bytes), a signed payload hash, never Transfer-Encoding.
        puts = [r for r in proxy.records if r.method == "PUT" and r.body_len]
        assert puts and all(r.headers.get("Expect") == "100-continue" for r in puts)
        assert not any("Transfer-Encoding" in r.headers for r in proxy.records)
        parts = [r for r in puts if "partNumber=" in r.target]
        assert len(parts) == 2 and all(r.body_len == len(big) for r in parts)


def test_chunked_aws_chunked_bodies(s3_server, monkeypatch):
    """aiobotocore sends `Transfer-Encoding: chunked` + `Content-Encoding: aws-chunked` (trailer checksum)
    only to https endpoints; pretend the endpoint is https to that decision and check the proxy de-chunks
    the framing and passes the aws-chunked payload on for moto to decode."""
    import botocore.httpchecksum as httpchecksum

    real = httpchecksum.urlparse
    monkeypatch.setattr(httpchecksum, "urlparse", lambda url, *a, **k: real(url, *a, **k)._replace(
        scheme="https"))
    with FaultProxy(s3_server) as proxy:
        fs = make_fs(proxy)
        bucket = new_bucket(fs)
        data = os.urandom(3 * 2**20 + 7)
        fs.pipe(f"{bucket}/c.bin", data)
        with fs.open(f"{bucket}/m.bin", "wb", block_size=5 * 2**20) as f:
            f.write(data)
            f.write(data)
        assert fs.cat(f"{bucket}/c.bin") == data
        assert fs.cat(f"{bucket}/m.bin") == data + data
        chunked = [r for r in proxy.records if r.headers.get("Transfer-Encoding") == "chunked"]
        assert len(chunked) == 2
        assert all(r.headers["Content-Encoding"] == "aws-chunked" for r in chunked)
        assert all(r.headers["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER" for r in chunked)

    # And by hand: chunked framing with extensions and trailers, plain payload.
    with FaultProxy(s3_server) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.putrequest("PUT", f"/{bucket}/raw.txt")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        conn.close()
        assert make_fs(proxy).cat(f"{bucket}/raw.txt") == b"hello world"


def test_signature_covers_host(monkeypatch):
    """With moto's auth on, a Host rewritten by the proxy breaks SigV4; kept as sent, it passes."""
    import boto3
    from moto import settings
    from moto.server import ThreadedMotoServer

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        upstream = f"http://{host}:{port}"
        iam = boto3.client("iam", endpoint_url=upstream, region_name="us-east-1")
        iam.create_user(UserName="tester")
        iam.put_user_policy(UserName="tester", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="tester")["AccessKey"]
        monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks signatures now
        creds = {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
        with FaultProxy(upstream) as proxy:
            fs = make_fs(proxy, **creds)
            fs.mkdir("signed")
            fs.pipe("signed/x", b"abc")
            assert fs.cat("signed/x") == b"abc"
            with pytest.raises(PermissionError, match="signature we calculated does not match"):
                make_fs(proxy, key=key["AccessKeyId"], secret="wrong").pipe("signed/y", b"abc")
        with FaultProxy(upstream, rewrite_host=True) as proxy:
            with pytest.raises(PermissionError, match="signature we calculated does not match"):
                make_fs(proxy, **creds).pipe("signed/y", b"abc")
            # (a HEAD, as fs.info does, gets a 403 without a body: PermissionError("Forbidden"))
            with pytest.raises(PermissionError, match="Forbidden"):
                make_fs(proxy, **creds).info("signed/x")
    finally:
        server.stop()


def test_error_response_shape(s3_server):
    with FaultProxy(s3_server, error_rate=1.0, statuses=(503,), fault_after_forward_share=0) as proxy:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{proxy.url}/some-bucket/some/key?x=1", timeout=5)
        err = info.value
        body = err.read()
        assert err.code == 503
        assert err.headers["Content-Type"] == "application/xml"
        assert int(err.headers["Content-Length"]) == len(body)
        assert b"<Code>SlowDown</Code>" in body and b"<Message>injected</Message>" in body
        assert b"<Resource>/some-bucket/some/key</Resource>" in body
        assert proxy.records[-1].fault == "before" and proxy.faults_injected == proxy.requests == 1


def test_random_faults_are_retried(s3_server, fast_backoff):
    with FaultProxy(s3_server, seed=3) as proxy:
        fs = make_fs(proxy, FAST_RETRIES)
        bucket = new_bucket(fs)
        proxy.set_error_rate(0.2)
        t0 = time.monotonic()
        for i in range(25):  # 50 operations: 25 pipes, 25 cats
            data = f"payload {i} ".encode() * (i + 1)
            fs.pipe(f"{bucket}/k{i}", data)
            assert fs.cat(f"{bucket}/k{i}") == data
        elapsed = time.monotonic() - t0
        # Concurrent ones too (s3fs gathers them: several connections, handler threads at once).
        batch = {f"{bucket}/batch/{i}": os.urandom(1000 + i) for i in range(20)}
        fs.pipe(batch)
        assert fs.cat(list(batch)) == batch
        proxy.set_error_rate(0.0)
        faults, requests = proxy.faults_injected, proxy.requests
        assert faults >= 5
        kinds = {r.fault for r in proxy.records}
        assert {"before", "after", None} <= kinds  # errors both without and after applying upstream
        assert {r.status for r in proxy.records if r.fault} == {500, 503}
        assert len(fs.ls(bucket)) == 26
        assert proxy.faults_injected == faults and proxy.requests > requests  # rate 0 now: no more
        print(f"50 ops at 20 %: {elapsed:.2f} s; with the batch: {requests} requests, {faults} faults")


def test_fault_proxy_fixture(fault_proxy):
    """conftest's `fault_proxy`: AWS_ENDPOINT_URL is the proxy's, so a plain S3FileSystem goes through it."""
    import s3fs

    assert os.environ["AWS_ENDPOINT_URL"] == fault_proxy.url
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = new_bucket(fs)
    fs.pipe(f"{bucket}/x", b"through the proxy")
    assert fs.cat(f"{bucket}/x") == b"through the proxy"
    assert fault_proxy.requests >= 4 and fault_proxy.faults_injected == 0
    fault_proxy.add_rule(FaultRule(method="PUT", path_regex=r"/x$", status=403))
    with pytest.raises(PermissionError):
        fs.pipe(f"{bucket}/x", b"again")


def test_rule_403_fails_put_other_paths_work(s3_server):
    rule = FaultRule(method="PUT", path_regex=r"/masklets/vid-1/", status=403)
    with FaultProxy(s3_server, rules=[rule]) as proxy:
        fs = make_fs(proxy)  # default retries: 403 is not retried by botocore nor s3fs
        bucket = new_bucket(fs)
        t0 = time.monotonic()
        with pytest.raises(PermissionError) as info:
            fs.pipe(f"{bucket}/masklets/vid-1/0.json", b"{}")
        assert time.monotonic() - t0 < 5
        assert str(info.value) == "injected"
        assert isinstance(info.value.__cause__, ClientError)  # botocore's class for the code: AccessDenied
        assert info.value.__cause__.response["Error"]["Code"] == "AccessDenied"
        assert rule.hits == 1  # tried once
        fs.pipe(f"{bucket}/masklets/vid-2/0.json", b"{}")
        assert fs.cat(f"{bucket}/masklets/vid-2/0.json") == b"{}"
        assert fs.cat(f"{bucket}/masklets/vid-2/0.json") == b"{}"
        assert not fs.exists(f"{bucket}/masklets/vid-1/0.json")  # GETs of the path are not matched
        assert rule.hits == 1


@pytest.mark.parametrize("status,code,err_no", [(500, "InternalError", 121), (503, "SlowDown", errno.EBUSY)])
def test_rule_5xx_forever(s3_server, fast_backoff, status, code, err_no):
    rule = FaultRule(method="PUT", path_regex=r"/masklets/vid-1/", status=status)
    with FaultProxy(s3_server, rules=[rule]) as proxy:
        fs = make_fs(proxy, FEW_RETRIES)
        bucket = new_bucket(fs)
        with pytest.raises(OSError) as info:
            fs.pipe(f"{bucket}/masklets/vid-1/0.json", b"{}")
        e = info.value
        assert type(e) is OSError and e.errno == err_no and e.strerror == "injected"
        assert e.__cause__.response["Error"]["Code"] == code
        assert "reached max retries: 1" in str(e.__cause__)
        # botocore: 2 attempts; s3fs retries SlowDown itself too (5 rounds), InternalError not.
        assert rule.hits == (2 if status == 500 else 2 * 5)
        fs.pipe(f"{bucket}/masklets/vid-2/0.json", b"ok")
        assert fs.cat(f"{bucket}/masklets/vid-2/0.json") == b"ok"


def test_rule_times_and_after_forward(s3_server, fast_backoff):
    # The first 2 PUTs of the key fail after moto stored it: botocore retries, the 3rd goes through.
    rule = FaultRule(method="PUT", path_regex=r"/flaky\.bin$", status=500, times=2, after_forward=True)
    with FaultProxy(s3_server, rules=[rule]) as proxy:
        fs = make_fs(proxy, FAST_RETRIES)
        bucket = new_bucket(fs)
        fs.pipe(f"{bucket}/flaky.bin", b"v1")
        assert rule.hits == 2 and proxy.faults_injected == 2
        assert [r.fault for r in proxy.records if r.method == "PUT" and "flaky" in r.target] == [
            "rule-after", "rule-after", None]
        assert fs.cat(f"{bucket}/flaky.bin") == b"v1"
        fs.pipe(f"{bucket}/flaky.bin", b"v2")  # times used up: forwarded
        assert rule.hits == 2 and fs.cat(f"{bucket}/flaky.bin") == b"v2"


def test_stop_closes_port_and_joins_threads(s3_server):
    with FaultProxy(s3_server) as proxy:
        fs = make_fs(proxy)
        new_bucket(fs)  # leaves aiohttp keep-alive connections open to the proxy
        port = proxy.port
        assert proxy_threads()
    assert not proxy.running and refuses(port)
    assert not proxy_threads()


def test_stops_by_itself_after_max_seconds(s3_server):
    proxy = FaultProxy(s3_server, max_seconds=1).start()
    port = proxy.port
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)  # an idle client connection
    with urllib.request.urlopen(f"{proxy.url}/", timeout=5) as resp:  # moto's ListBuckets
        assert resp.status == 200
    t0 = time.monotonic()
    while proxy.running and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert not proxy.running
    assert 0.8 < proxy.stopped_at - proxy.started_at < 5
    assert refuses(port)
    assert idle.recv(1) == b""  # the open connection was closed too
    idle.close()
    assert not proxy_threads()
    proxy.stop()  # idempotent


def test_upstream_down_is_502():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{dead}") as proxy:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{proxy.url}/b/k", timeout=5)
        assert info.value.code == 502 and b"<Code>BadGateway</Code>" in info.value.read()
        assert proxy.records[-1].fault == "upstream-down"
