"""Hostile backups against the memory of the process that runs ``restore.test`` (the CLI here;
the bot runs the monthly drill the same way): decompression bombs planted in the sandbox's S3
bucket, the CLI run as a child process, its peak RSS read from the kernel (``os.wait4``)."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable

import bson
import pytest
from bson import json_util

from tests.conftest import AwsWorld
from tests.support.memory import MIB, gzip_stream, repeated, run_cli_measured

BUCKET = "app-backups"
PREFIX = "nightly/2026-12-01T00-00-00Z"  # the production_backup fixture's
#: How much more than a good backup's restore a hostile one may cost (generous: the fixed
#: code holds at most one 16 MiB document or metadata file; the old code held gigabytes).
BOUND = 300 * MIB


def _bson_bomb(body: bytes) -> bytes:
    """The real documents, then a length prefix claiming 2 GiB over 1 GiB of zeros (about
    1 MB compressed)."""
    documents = gzip.decompress(body)
    claim = (2**31 - 1).to_bytes(4, "little")
    return gzip_stream([documents, claim, *repeated(bytes(MIB), 1024 * MIB)])


def _metadata_bomb(body: bytes) -> bytes:
    """The real metadata, after 768 MiB of whitespace (valid JSON, about 0.8 MB compressed)."""
    return gzip_stream([*repeated(b" " * MIB, 768 * MIB), gzip.decompress(body)])


BOMBS: dict[str, tuple[str, Callable[[bytes], bytes], str, str]] = {
    "bson length prefix of 2 GiB over a gzip of zeros": (
        "app/orders.bson.gz",
        _bson_bomb,
        "orders: document too large",
        "claims 2147483647 bytes, more than MongoDB's limit of 16 MiB (16777216 bytes)",
    ),
    "metadata of 768 MiB whitespace": (
        "app/users.metadata.json.gz",
        _metadata_bomb,
        "users: metadata",
        "is larger than the limit of 16 MiB (16777216 bytes)",
    ),
}


@pytest.mark.slow  # the CLI as a process
@pytest.mark.parametrize("bomb", list(BOMBS))
def test_a_decompression_bomb_fails_the_restore_test_with_memory_bounded(
    bomb: str, cli_env: dict[str, str], production_backup: dict[str, str], aws: AwsWorld
) -> None:
    env = {**cli_env, **production_backup}
    args = ["restore.test", "production", "--backup", PREFIX, "--yes", "--json"]
    good = run_cli_measured(args, env)
    assert good.returncode == 0, good.stderr[-2000:]

    key, build, named, detail = BOMBS[bomb]
    s3 = aws.client("s3")
    original = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read()
    hostile = build(original)
    assert len(hostile) < 2 * MIB  # what an attacker needs to plant
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=hostile)

    bad = run_cli_measured(args, env)
    growth = bad.peak_rss - good.peak_rss
    assert growth < BOUND, (
        f"peak RSS {bad.peak_rss / MIB:.0f} MiB, {growth / MIB:.0f} MiB over a good restore's "
        f"{good.peak_rss / MIB:.0f} MiB"
    )
    assert bad.returncode == 1, (bad.returncode, bad.stdout[-2000:], bad.stderr[-2000:])
    error = json.loads(bad.stdout)["error"]
    assert named in error and detail in error, error
    assert "restore test FAILED: checked 2 of 3 collections" in error, error
    assert "Traceback" not in bad.stderr


# Slow with the tests it vouches for: it decompresses the 1.8 GiB the bombs claim (12 s of a
# loaded worker), and only the process journeys above plant them.
@pytest.mark.slow
def test_the_bombs_are_what_they_claim() -> None:
    """The oracle for the fixtures themselves: zlib and bson, streamed, say the planted
    objects decompress to what their names say."""
    documents = b"".join(bson.encode({"_id": i}) for i in range(3))
    bomb = _bson_bomb(gzip.compress(documents))
    stream = gzip.GzipFile(fileobj=io.BytesIO(bomb))
    assert stream.read(len(documents)) == documents
    assert int.from_bytes(stream.read(4), "little") == 2**31 - 1
    total = 0
    while chunk := stream.read(MIB):
        assert chunk.count(0) == len(chunk)
        total += len(chunk)
    assert total == 1024 * MIB

    metadata = {"indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]}
    wrapped = _metadata_bomb(gzip.compress(json_util.dumps(metadata).encode()))
    stream = gzip.GzipFile(fileobj=io.BytesIO(wrapped))
    spaces = 0
    while (chunk := stream.read(MIB)).strip() == b"" and chunk:
        spaces += len(chunk)
    assert spaces == 768 * MIB
    assert json_util.loads(chunk) == metadata
