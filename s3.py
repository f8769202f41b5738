"""Verified S3 transfers with boto3 and the standard credential chain (environment, shared
config and credentials files, SSO, container and instance roles). `endpoint_url` points them at an
S3-compatible store (MinIO, Ceph, R2, ...); left at None, boto3 reads AWS_ENDPOINT_URL_S3 /
AWS_ENDPOINT_URL / the config file's endpoint_url itself, else it talks to AWS.

    split_uri(uri)                        -> (bucket, key)
    download_file(uri, dest_path)         -> {"bytes", "sha256"}
    upload_dir(local_dir, uri_prefix)     -> {relative path: {"bytes", "sha256"}}
    download_dir(uri_prefix, local_dir)   -> {relative path: {"bytes", "sha256"}}

upload_dir stores each file's sha256 in the object metadata `sha256`; downloads check the size
and, where that metadata is present, the sha256 before anything is put in place. Every botocore
error comes out as an S3Error naming the bucket/key and what to do.

    python s3.py upload LOCAL_DIR s3://bucket/prefix [--endpoint-url URL]
    python s3.py download s3://bucket/prefix LOCAL_DIR [--endpoint-url URL]
"""

import contextlib
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

import boto3
import botocore.exceptions as bce
import s3transfer.exceptions
from boto3.s3.transfer import TransferConfig, create_transfer_manager

import errors
import files

logger = logging.getLogger("s3")

MiB = 1 << 20
MULTIPART_THRESHOLD = 64 * MiB  # files at least this big go up (and come down) in parts
PART_SIZE = 16 * MiB  # S3 needs at least 5 MiB per part (except the last)


class S3Error(errors.UserError, ValueError):
    """An S3 transfer failed: the message names the bucket/key and what to do."""


def split_uri(uri: str) -> Tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key). The key may be empty (`s3://bucket`, `s3://bucket/`)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise S3Error(f"{uri!r} is not an S3 URI; write it as s3://bucket/key")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or any(c.isspace() for c in bucket):
        raise S3Error(f"{uri!r} names no valid bucket; write it as s3://bucket/key")
    return bucket, key


# ---------------------------------------------------------------------------------------------
# botocore errors -> S3Error
# ---------------------------------------------------------------------------------------------


def _code(err: bce.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _error(err: Exception, bucket: str, key: Optional[str], endpoint: Optional[str]) -> S3Error:
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    at = endpoint or "the default S3 endpoint"
    if isinstance(err, bce.NoCredentialsError):
        return S3Error(
            f"{where}: no AWS credentials found. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE), or run where an IAM role provides them."
        )
    if isinstance(
        err, (bce.PartialCredentialsError, bce.ProfileNotFound, bce.CredentialRetrievalError)
    ):
        return S3Error(
            f"{where}: the AWS credentials are incomplete or unreadable ({err}). Fix the "
            "AWS_* environment variables or the profile in ~/.aws."
        )
    if isinstance(err, bce.ConnectionError):  # unreachable, connect timeout, proxy, TLS
        return S3Error(
            f"{where}: cannot reach the S3 endpoint {at} ({err}). Check --endpoint-url / "
            "AWS_ENDPOINT_URL, and that the store is running and reachable from here."
        )
    if isinstance(err, s3transfer.exceptions.RetriesExceededError):
        return S3Error(
            f"{where}: the transfer from {at} kept breaking off ({err.last_exception}); "
            "check the network and retry."
        )
    if not isinstance(err, bce.ClientError):
        return S3Error(
            f"{where}: S3 request to {at} failed ({err}); retry, or check the endpoint and network."
        )
    code = _code(err)
    if code == "NoSuchBucket" or (code in ("404", "NotFound") and not key):
        return S3Error(
            f"s3://{bucket}: no such bucket at {at}. Check the bucket name and the endpoint / "
            "region, or create the bucket."
        )
    if code in ("NoSuchKey", "404", "NotFound"):
        return S3Error(
            f"{where}: no such object at {at}. Check the key (list the prefix with "
            f"`aws s3 ls s3://{bucket}/{os.path.dirname(key or '')}/`)."
        )
    if code == "InvalidAccessKeyId":
        return S3Error(
            f"{where}: the access key ID is unknown to {at}. Check AWS_ACCESS_KEY_ID / "
            "AWS_PROFILE, and that the credentials belong to this endpoint."
        )
    if code == "SignatureDoesNotMatch":
        return S3Error(
            f"{where}: the secret key does not match the access key ID at {at}. Check "
            "AWS_SECRET_ACCESS_KEY / the profile's aws_secret_access_key."
        )
    if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired", "RequestExpired"):
        return S3Error(
            f"{where}: the credentials have expired ({code}); refresh them (for example "
            "`aws sso login`) and retry."
        )
    if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
        return S3Error(
            f"{where}: access denied at {at} ({code}). The credentials are wrong, or lack "
            "permission for this bucket/key (for a missing object without s3:ListBucket S3 "
            "also answers 403); check the IAM and bucket policies."
        )
    if code in ("PreconditionFailed", "412"):
        return S3Error(f"{where}: the object changed during the download; retry.")
    return S3Error(f"{where}: S3 request to {at} failed ({err}).")


@contextlib.contextmanager
def _translated(bucket: str, key: Optional[str], endpoint: Optional[str]):
    try:
        yield
    except (bce.BotoCoreError, bce.ClientError, s3transfer.exceptions.RetriesExceededError) as err:
        raise _error(err, bucket, key, endpoint) from err


def _head(client, bucket: str, key: str) -> dict:
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except bce.ClientError as err:
        if _code(err) not in ("403", "404", "Forbidden", "NotFound"):
            raise
        # A HEAD answer has no body, so no error code: a missing bucket, a missing key and wrong
        # credentials all look alike. A listing's error answer names the cause; where listing is
        # not allowed, the HEAD's own status is all there is to go on.
        try:
            client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        except bce.ClientError as probe:
            if _code(probe) != "AccessDenied":
                raise probe from err
        raise


# ---------------------------------------------------------------------------------------------
# transfers
# ---------------------------------------------------------------------------------------------


def _client(endpoint_url: Optional[str]):
    # A fresh session each time: the default session caches credentials and endpoint settings
    # from the first call, and later changes to the environment would be ignored.
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url)


def _transfer_config(multipart_threshold: int, part_size: int) -> TransferConfig:
    # "classic": the pure-Python transfer manager on every machine (the CRT one is picked
    # automatically on some instance types and behaves differently).
    return TransferConfig(
        multipart_threshold=multipart_threshold,
        multipart_chunksize=part_size,
        preferred_transfer_client="classic",
    )


def _dir_prefix(key: str) -> str:
    # "run/a" must not also match "run/ab/...": a prefix is always a whole directory.
    return key if not key or key.endswith("/") else key + "/"


def _fetch(client, manager, bucket: str, key: str, dest_path: str) -> dict:
    """One object -> dest_path through a temporary file beside it (files.atomic_file), verified
    before it replaces anything."""
    head = _head(client, bucket, key)
    expected_bytes, expected_sha = head["ContentLength"], head.get("Metadata", {}).get("sha256")
    os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
    with files.atomic_file(dest_path) as tmp:
        with open(tmp, "wb") as f:
            manager.download(bucket, key, f).result()
        n, digest = files.size_and_sha256(tmp)
        if n != expected_bytes:
            raise S3Error(
                f"s3://{bucket}/{key}: downloaded {n} bytes, the object has {expected_bytes}; "
                "the transfer was cut short or the object changed. Retry."
            )
        if expected_sha and digest != expected_sha.lower():
            raise S3Error(
                f"s3://{bucket}/{key}: sha256 {digest} does not match the object's metadata "
                f"sha256 {expected_sha}; the object is corrupt or was overwritten without "
                "updating its metadata. Upload it again."
            )
    return {"bytes": n, "sha256": digest}


def download_file(
    uri: str,
    dest_path: str,
    endpoint_url: Optional[str] = None,
    multipart_threshold: int = MULTIPART_THRESHOLD,
    part_size: int = PART_SIZE,
) -> dict:
    """Download one object to dest_path, verified against its size and metadata sha256; on any
    failure dest_path is left as it was. Returns {"bytes", "sha256"}."""
    bucket, key = split_uri(uri)
    if not key or key.endswith("/"):
        raise S3Error(
            f"{uri}: names no object (the key is empty or ends in /); pass s3://bucket/key"
        )
    if os.path.isdir(dest_path):
        raise S3Error(f"{dest_path} is a directory; pass the path of the file to write")
    with _translated(bucket, key, endpoint_url):
        client = _client(endpoint_url)
    with (
        _translated(bucket, key, client.meta.endpoint_url),
        create_transfer_manager(
            client, _transfer_config(multipart_threshold, part_size)
        ) as manager,
    ):
        result = _fetch(client, manager, bucket, key, dest_path)
    logger.info("downloaded %s (%d bytes) to %s", uri, result["bytes"], dest_path)
    return result


def _local_files(local_dir: str) -> List[str]:
    if not os.path.isdir(local_dir):
        raise S3Error(f"{local_dir}: no such directory; pass the directory to upload")
    found = []
    for root, dirs, names in os.walk(local_dir):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            if os.path.isfile(path):
                found.append(os.path.relpath(path, local_dir).replace(os.sep, "/"))
    if not found:
        raise S3Error(f"{local_dir}: holds no files, nothing to upload")
    return found


def upload_dir(
    local_dir: str,
    uri_prefix: str,
    endpoint_url: Optional[str] = None,
    multipart_threshold: int = MULTIPART_THRESHOLD,
    part_size: int = PART_SIZE,
) -> Dict[str, dict]:
    """Upload every file under local_dir (recursively) to uri_prefix/<relative path>, in parts
    from multipart_threshold bytes on, each with its sha256 in the metadata `sha256`, and check
    every object's size and sha256 on the store afterwards. Objects already under the prefix that
    are not in local_dir are left alone. Returns {relative path: {"bytes", "sha256"}}."""
    bucket, prefix = split_uri(uri_prefix)
    prefix = _dir_prefix(prefix)
    relative_paths = _local_files(local_dir)
    with _translated(bucket, prefix or None, endpoint_url):
        client = _client(endpoint_url)
    endpoint = client.meta.endpoint_url
    manifest = {}
    with create_transfer_manager(
        client, _transfer_config(multipart_threshold, part_size)
    ) as manager:
        for rel in relative_paths:
            path, key = os.path.join(local_dir, *rel.split("/")), prefix + rel
            n, digest = files.size_and_sha256(path)
            with _translated(bucket, key, endpoint):
                manager.upload(
                    path, bucket, key, extra_args={"Metadata": {"sha256": digest}}
                ).result()
                head = _head(client, bucket, key)
            stored_bytes, stored_sha = head["ContentLength"], head.get("Metadata", {}).get("sha256")
            if stored_bytes != n or stored_sha != digest:
                raise S3Error(
                    f"s3://{bucket}/{key}: the store holds {stored_bytes} bytes with sha256 "
                    f"{stored_sha}, but {path} has {n} bytes with sha256 {digest}; the file may "
                    "have changed while uploading, or the store dropped the metadata. Upload again."
                )
            manifest[rel] = {"bytes": n, "sha256": digest}
            logger.info("uploaded %s (%d bytes) to s3://%s/%s", path, n, bucket, key)
    return manifest


def _list(client, bucket: str, prefix: str) -> List[Tuple[str, str]]:
    """(key, relative path) of every object under prefix, sorted; directory markers skipped."""
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            rel = key[len(prefix) :]
            if not rel or rel.endswith("/"):
                continue
            # Keys are arbitrary strings: refuse any that would land outside local_dir.
            if any(part in ("", ".", "..") for part in rel.split("/")) or "\\" in rel:
                raise S3Error(
                    f"s3://{bucket}/{key}: this key cannot be a path under the download "
                    "directory (empty, '.' or '..' parts, or a backslash); rename the object."
                )
            found.append((key, rel))
    return sorted(found)


def download_dir(
    uri_prefix: str,
    local_dir: str,
    endpoint_url: Optional[str] = None,
    multipart_threshold: int = MULTIPART_THRESHOLD,
    part_size: int = PART_SIZE,
) -> Dict[str, dict]:
    """Download every object under uri_prefix into local_dir, each verified by size and
    metadata sha256, into a temporary sibling directory renamed to local_dir only when all
    arrived intact (an existing local_dir is replaced then, and untouched on failure).
    Returns {relative path: {"bytes", "sha256"}}."""
    bucket, prefix = split_uri(uri_prefix)
    prefix = _dir_prefix(prefix)
    local_dir = os.path.abspath(local_dir)
    if os.path.exists(local_dir) and not os.path.isdir(local_dir):
        raise S3Error(f"{local_dir} exists and is not a directory; pass a directory path")
    with _translated(bucket, prefix or None, endpoint_url):
        client = _client(endpoint_url)
    endpoint = client.meta.endpoint_url
    with _translated(bucket, prefix or None, endpoint):
        objects = _list(client, bucket, prefix)
    if not objects:
        raise S3Error(
            f"s3://{bucket}/{prefix}: no objects under this prefix at {endpoint}; check the prefix."
        )
    manifest = {}
    with (
        files.atomic_dir(local_dir) as tmp,
        create_transfer_manager(
            client, _transfer_config(multipart_threshold, part_size)
        ) as manager,
    ):
        for key, rel in objects:
            with _translated(bucket, key, endpoint):
                manifest[rel] = _fetch(
                    client, manager, bucket, key, os.path.join(tmp, *rel.split("/"))
                )
            logger.info("downloaded s3://%s/%s (%d bytes)", bucket, key, manifest[rel]["bytes"])
    return manifest


def main(argv=None) -> None:
    parser = errors.ArgumentParser(
        description="Verified directory transfers to and from S3 " "(JSON report on the last line)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upload", help="upload a directory under an s3:// prefix")
    up.add_argument("local_dir")
    up.add_argument("uri", metavar="s3://bucket/prefix")
    down = commands.add_parser("download", help="download an s3:// prefix into a directory")
    down.add_argument("uri", metavar="s3://bucket/prefix")
    down.add_argument("local_dir")
    for p in (up, down):
        p.add_argument(
            "--endpoint-url", help="an S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS)"
        )
    args = parser.parse_args(argv)
    errors.setup_logging()
    try:
        if args.command == "upload":
            manifest = upload_dir(args.local_dir, args.uri, args.endpoint_url)
        else:
            manifest = download_dir(args.uri, args.local_dir, args.endpoint_url)
    except OSError as err:  # a local file system error without a file name (a full disk, ...)
        raise errors.UserError(f"{args.local_dir}: {err}") from err
    print(
        json.dumps(
            {
                "command": args.command,
                "uri": args.uri,
                "local_dir": args.local_dir,
                "files": len(manifest),
                "bytes": sum(m["bytes"] for m in manifest.values()),
                "manifest": manifest,
            }
        )
    )


if __name__ == "__main__":
    errors.run_command(main)
