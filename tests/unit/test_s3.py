"""s3.py against a real S3-compatible server (moto's, on 127.0.0.1, started here): round trips
with multipart, verification, atomic replacement, and the error messages of real error answers
(moto checks signatures and IAM policies once its auth is switched on, see `enforced_auth`)."""

import contextlib
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import urllib.request
import uuid

import boto3
import pytest
from conftest import ROOT
from moto.server import ThreadedMotoServer

import cache
import errors
import s3

MiB = 1 << 20
SMALL_PARTS = {"multipart_threshold": 5 * MiB, "part_size": 5 * MiB}  # 5 MiB: S3's smallest part


@pytest.fixture(scope="module")
def endpoint():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Fake credentials only from the environment: no profile, config file or instance role
    from this machine can leak in, and no proxy sits between us and 127.0.0.1."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_RETRY_MODE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # errors at once, no backoff
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def client(endpoint, aws_env):
    return boto3.session.Session().client("s3", endpoint_url=endpoint)


@pytest.fixture
def bucket(client):
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_tree(root) -> dict:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root).replace(os.sep, "/")] = f.read()
    return out


def partials(directory) -> list:
    return [n for n in os.listdir(directory) if n.startswith(".partial-")]


def make_tree(root, big: bool = False) -> dict:
    files = {"a.txt": b"alpha\n", "sub/b.json": b'{"b": 1}', "sub/deeper/empty": b""}
    if big:
        files["big.bin"] = os.urandom(11 * MiB)  # 3 parts of <= 5 MiB
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@contextlib.contextmanager
def enforced_auth(endpoint):
    """moto checks signatures and IAM policies while this is open (its /moto-api/reset-auth
    sets how many requests pass unchecked: 0), and passes everything again afterwards."""

    def reset(count: bytes) -> None:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=count,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["status"] == "ok"

    reset(b"0")
    try:
        yield
    finally:
        reset(b"inf")


@pytest.fixture(scope="module")
def iam_keys(endpoint):
    """Access keys of two IAM users, made while auth is off: `allowed` may do anything in S3,
    `denied` has no policy."""
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    keys = {}
    for user in ("allowed", "denied"):
        name = f"{user}-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        if user == "allowed":
            iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
    return keys


def test_split_uri():
    assert s3.split_uri("s3://bkt/a/b.json") == ("bkt", "a/b.json")
    assert s3.split_uri("s3://bkt") == ("bkt", "")
    assert s3.split_uri("s3://bkt/") == ("bkt", "")
    for bad in ("bkt/key", "https://bkt/key", "s3://", "s3:///key", "s3:// bkt/key", None):
        with pytest.raises(s3.S3Error, match="s3://bucket/key"):
            s3.split_uri(bad)


def test_upload_then_download_dir_round_trip(endpoint, client, bucket, tmp_path):
    files = make_tree(tmp_path / "src", big=True)
    manifest = s3.upload_dir(
        str(tmp_path / "src"), f"s3://{bucket}/runs/1", endpoint_url=endpoint, **SMALL_PARTS
    )
    assert manifest == {
        rel: {"bytes": len(data), "sha256": sha256(data)} for rel, data in files.items()
    }

    head = client.head_object(Bucket=bucket, Key="runs/1/big.bin")
    assert head["ETag"].strip('"').endswith("-3"), "the 11 MiB file should have gone up in 3 parts"
    assert head["Metadata"]["sha256"] == sha256(files["big.bin"])
    assert client.head_object(Bucket=bucket, Key="runs/1/sub/deeper/empty")["Metadata"][
        "sha256"
    ] == sha256(b"")

    dest = tmp_path / "out" / "model"
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("from an older download")
    got = s3.download_dir(f"s3://{bucket}/runs/1/", str(dest), endpoint_url=endpoint, **SMALL_PARTS)
    assert got == manifest
    assert read_tree(dest) == files  # stale.txt gone: the directory was replaced whole
    assert os.listdir(tmp_path / "out") == ["model"]  # no temporary or set-aside directory left


def test_prefix_is_a_whole_directory(endpoint, bucket, tmp_path):
    a = make_tree(tmp_path / "a")
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "other.txt").write_bytes(b"not under run/a")
    s3.upload_dir(str(tmp_path / "a"), f"s3://{bucket}/run/a", endpoint_url=endpoint)
    s3.upload_dir(str(tmp_path / "ab"), f"s3://{bucket}/run/ab", endpoint_url=endpoint)
    s3.download_dir(f"s3://{bucket}/run/a", str(tmp_path / "back"), endpoint_url=endpoint)
    assert read_tree(tmp_path / "back") == a


def test_download_file(endpoint, client, bucket, tmp_path, monkeypatch):
    data = b"x" * 1000 + b"end"
    client.put_object(
        Bucket=bucket, Key="data/train.json", Body=data, Metadata={"sha256": sha256(data)}
    )
    dest = tmp_path / "new" / "train.json"
    assert s3.download_file(f"s3://{bucket}/data/train.json", str(dest), endpoint_url=endpoint) == {
        "bytes": len(data),
        "sha256": sha256(data),
    }
    assert dest.read_bytes() == data
    assert partials(dest.parent) == []

    # No sha256 metadata (an object some other tool uploaded): the size is still checked.
    # The endpoint comes from AWS_ENDPOINT_URL, as boto3 itself reads it.
    client.put_object(Bucket=bucket, Key="plain.txt", Body=b"plain")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    assert s3.download_file(f"s3://{bucket}/plain.txt", str(dest))["bytes"] == 5
    assert dest.read_bytes() == b"plain"


def test_download_file_through_parts(endpoint, client, bucket, tmp_path):
    data = os.urandom(11 * MiB)
    client.put_object(Bucket=bucket, Key="big", Body=data, Metadata={"sha256": sha256(data)})
    dest = tmp_path / "big"
    assert s3.download_file(f"s3://{bucket}/big", str(dest), endpoint_url=endpoint, **SMALL_PARTS)[
        "bytes"
    ] == len(data)
    assert dest.read_bytes() == data


def test_missing_bucket(endpoint, tmp_path):
    make_tree(tmp_path / "src")
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    calls = [
        lambda: s3.download_file(
            f"s3://{missing}/a.txt", str(tmp_path / "a.txt"), endpoint_url=endpoint
        ),
        lambda: s3.download_dir(
            f"s3://{missing}/run", str(tmp_path / "out"), endpoint_url=endpoint
        ),
        lambda: s3.upload_dir(str(tmp_path / "src"), f"s3://{missing}/run", endpoint_url=endpoint),
    ]
    for call in calls:
        with pytest.raises(
            s3.S3Error, match=f"s3://{missing}: no such bucket at {endpoint}.*create the bucket"
        ):
            call()
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_missing_key(endpoint, bucket, tmp_path):
    with pytest.raises(s3.S3Error, match=f"s3://{bucket}/data/nope.json: no such object"):
        s3.download_file(
            f"s3://{bucket}/data/nope.json", str(tmp_path / "nope.json"), endpoint_url=endpoint
        )
    with pytest.raises(s3.S3Error, match=f"s3://{bucket}/empty/: no objects under this prefix"):
        s3.download_dir(f"s3://{bucket}/empty", str(tmp_path / "out"), endpoint_url=endpoint)
    with pytest.raises(s3.S3Error, match="names no object"):
        s3.download_file(f"s3://{bucket}/dir/", str(tmp_path / "x"), endpoint_url=endpoint)
    assert os.listdir(tmp_path) == []


def test_credentials_checked_by_the_server(
    endpoint, client, bucket, iam_keys, tmp_path, monkeypatch
):
    make_tree(tmp_path / "src")
    client.put_object(Bucket=bucket, Key="k.txt", Body=b"secret")
    uri, dest = f"s3://{bucket}/k.txt", str(tmp_path / "k.txt")
    allowed_id, allowed_secret = iam_keys["allowed"]
    cases = [
        ((allowed_id, allowed_secret), None),
        (("AKIAUNKNOWN000000000", "whatever"), "the access key ID is unknown.*AWS_ACCESS_KEY_ID"),
        ((allowed_id, "not-the-secret"), "the secret key does not match.*AWS_SECRET_ACCESS_KEY"),
        (iam_keys["denied"], "access denied.*IAM and bucket policies"),
    ]
    with enforced_auth(endpoint):
        for (key_id, secret), message in cases:
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
            if message is None:  # the server really checks: the right key still works
                assert s3.download_file(uri, dest, endpoint_url=endpoint)["bytes"] == 6
                assert s3.upload_dir(
                    str(tmp_path / "src"), f"s3://{bucket}/up", endpoint_url=endpoint
                )
                continue
            with pytest.raises(s3.S3Error, match=f"s3://{bucket}/k.txt: {message}"):
                s3.download_file(uri, dest, endpoint_url=endpoint)  # HEAD: a bare 403, then a probe
            with pytest.raises(s3.S3Error, match=f"s3://{bucket}/up/a.txt: {message}"):
                s3.upload_dir(str(tmp_path / "src"), f"s3://{bucket}/up", endpoint_url=endpoint)
    assert partials(tmp_path) == []


def test_no_credentials(endpoint, bucket, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(
        s3.S3Error, match=f"s3://{bucket}/k: no AWS credentials found.*AWS_ACCESS_KEY_ID"
    ):
        s3.download_file(f"s3://{bucket}/k", str(tmp_path / "k"), endpoint_url=endpoint)


def test_unreachable_endpoint(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on once this is closed
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(s3.S3Error, match=f"cannot reach the S3 endpoint {dead}.*AWS_ENDPOINT_URL"):
        s3.download_file("s3://bkt/k", str(tmp_path / "k"), endpoint_url=dead)


def test_failed_download_keeps_destination(endpoint, client, bucket, tmp_path):
    # The bytes arrive in full, but do not match the sha256 the object claims.
    client.put_object(
        Bucket=bucket, Key="run/good.txt", Body=b"good", Metadata={"sha256": sha256(b"good")}
    )
    client.put_object(Bucket=bucket, Key="run/zbad.txt", Body=b"bad", Metadata={"sha256": "0" * 64})
    dest = tmp_path / "bad.txt"
    dest.write_bytes(b"previous")
    with pytest.raises(s3.S3Error, match=f"s3://{bucket}/run/zbad.txt: sha256 .* does not match"):
        s3.download_file(f"s3://{bucket}/run/zbad.txt", str(dest), endpoint_url=endpoint)
    assert dest.read_bytes() == b"previous"

    old = tmp_path / "run"
    old.mkdir()
    (old / "good.txt").write_bytes(b"previous")
    with pytest.raises(s3.S3Error, match="zbad.txt: sha256"):
        s3.download_dir(f"s3://{bucket}/run", str(old), endpoint_url=endpoint)
    assert read_tree(old) == {"good.txt": b"previous"}
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "run"]  # no .partial- file or directory


def test_unsafe_key_refused(endpoint, client, bucket, tmp_path):
    client.put_object(Bucket=bucket, Key="run/../escape.txt", Body=b"x")
    with pytest.raises(s3.S3Error, match=r"run/\.\./escape.txt: this key cannot be a path"):
        s3.download_dir(f"s3://{bucket}/run", str(tmp_path / "out"), endpoint_url=endpoint)
    assert os.listdir(tmp_path) == []


def test_upload_dir_needs_files(endpoint, bucket, tmp_path):
    with pytest.raises(s3.S3Error, match="no such directory"):
        s3.upload_dir(str(tmp_path / "nope"), f"s3://{bucket}/x", endpoint_url=endpoint)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(s3.S3Error, match="holds no files"):
        s3.upload_dir(str(tmp_path / "empty"), f"s3://{bucket}/x", endpoint_url=endpoint)


def test_cli_round_trip(endpoint, bucket, tmp_path):
    files = make_tree(tmp_path / "src")

    def cli(*args):
        return subprocess.run(
            [sys.executable, os.path.join(ROOT, "s3.py"), *args, "--endpoint-url", endpoint],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )

    up = cli("upload", str(tmp_path / "src"), f"s3://{bucket}/cli")
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout.strip().splitlines()[-1])
    assert report["files"] == 3 and report["bytes"] == sum(len(d) for d in files.values())

    down = cli("download", f"s3://{bucket}/cli", str(tmp_path / "back"))
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout.strip().splitlines()[-1])["manifest"] == report["manifest"]
    assert read_tree(tmp_path / "back") == files

    failed = cli("download", f"s3://{bucket}-missing/cli", str(tmp_path / "never"))
    assert (
        failed.returncode == 1 and f"error: s3://{bucket}-missing: no such bucket" in failed.stderr
    )
    assert not (tmp_path / "never").exists()


def test_training_data_from_s3_is_cached_and_verified(
    endpoint, client, bucket, tmp_path, squad_files, monkeypatch
):
    """cache.fetch streams s3:// training files into the cache, reuses the verified copy, and
    reports a missing key as a DataError naming it."""
    import data

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    body = open(squad_files[1], "rb").read()
    client.put_object(Bucket=bucket, Key="squad/dev.json", Body=body)
    uri = f"s3://{bucket}/squad/dev.json"
    path = cache.fetch(uri, str(tmp_path / "cache"))
    assert open(path, "rb").read() == body
    assert len(data.read_squad(path, "validation")) == 120
    client.delete_object(Bucket=bucket, Key="squad/dev.json")
    assert cache.fetch(uri, str(tmp_path / "cache")) == path  # the cached copy, no request needed
    with pytest.raises(errors.DataError, match="nothing.json: no such object"):
        cache.fetch(f"s3://{bucket}/squad/nothing.json", str(tmp_path / "cache"))
