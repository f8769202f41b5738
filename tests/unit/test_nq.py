"""tools/nq_to_squad.py: Natural Questions (original and simplified layouts, gzipped or not, local or
S3) → SQuAD 2.0 that the project's own reader accepts. Every input is built here, small."""

import gzip
import json
import os
import socket
import subprocess
import sys

import nq_to_squad
import pytest
from conftest import ROOT

import data

# Tokens written <...> are HTML. A non-ASCII word before the answer makes byte and character
# offsets differ, so an answer_start copied from NQ's bytes would be caught.
WORDS = [
    "<H1>",
    "Vorbelor",
    "</H1>",  # 0-2
    "<P>",
    "Vorbelor",
    ",",
    "near",
    "Zürich",
    ",",
    "was",
    "founded",
    "by",  # 3-11
    "<B>",
    "Kesel",
    "Nortavez",
    "</B>",
    "in",
    "1204",
    ".",
    "</P>",  # 12-19
    "<P>",
    "Its",
    "capital",
    "is",
    "Ravon",
    ".",
    "</P>",
]  # 20-26
LONG, SHORT = (3, 20), (12, 16)
CONTEXT = "Vorbelor , near Zürich , was founded by Kesel Nortavez in 1204 ."


def nq_record(
    example_id,
    words=WORDS,
    long_answer=LONG,
    short_answer=SHORT,
    yes_no="NONE",
    question="who founded vorbelor",
    title="Vorbelor",
):
    """A valid original-format NQ example over `words`. Byte offsets are those of the words joined by
    single spaces in UTF-8, as NQ's are offsets into the page's HTML."""
    tokens, offset = [], 0
    for word in words:
        size = len(word.encode("utf-8"))
        tokens.append(
            {
                "token": word,
                "start_byte": offset,
                "end_byte": offset + size,
                "html_token": word.startswith("<"),
            }
        )
        offset += size + 1

    def span(bounds):
        if bounds is None:
            return {"start_token": -1, "end_token": -1, "start_byte": -1, "end_byte": -1}
        start, end = bounds
        return {
            "start_token": start,
            "end_token": end,
            "start_byte": tokens[start]["start_byte"],
            "end_byte": tokens[end - 1]["end_byte"],
        }

    annotation = {
        "annotation_id": 7,
        "long_answer": dict(span(long_answer), candidate_index=0 if long_answer else -1),
        "short_answers": [span(short_answer)] if short_answer else [],
        "yes_no_answer": yes_no,
    }
    return {
        "example_id": example_id,
        "question_text": question,
        "document_title": title,
        "document_url": f"https://en.wikipedia.org//w/index.php?title={title}&amp;oldid=1",
        "document_html": " ".join(words),
        "document_tokens": tokens,
        "long_answer_candidates": [dict(span(long_answer), top_level=True)] if long_answer else [],
        "annotations": [annotation],
    }


def simplified(record):
    """The same example in the "simplified" layout: document_text, no tokens, no title, no bytes."""
    out = {
        k: v
        for k, v in record.items()
        if k not in ("document_tokens", "document_html", "document_title")
    }
    out["document_text"] = " ".join(t["token"] for t in record["document_tokens"])
    return out


def write_jsonl(path, lines, gz=None):
    """Records (dicts) or raw strings, one per line; gzipped when the name ends in .gz."""
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines).encode(
        "utf-8"
    )
    gz = str(path).endswith(".gz") if gz is None else gz
    with gzip.open(path, "wb") if gz else open(path, "wb") as f:
        f.write(text)
    return str(path)


def convert(tmp_path, lines, name="nq.jsonl.gz", **kwargs):
    """(counts, SQuAD dict) of converting `lines` written to one file."""
    out = str(tmp_path / "squad.json")
    counts = nq_to_squad.convert_files([write_jsonl(tmp_path / name, lines)], out, **kwargs)
    with open(out, encoding="utf-8") as f:
        return counts, json.load(f)


def questions(squad):
    return [(p["context"], qa) for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]]


def check_counts(counts):
    assert set(counts) == set(nq_to_squad.COUNTS)
    assert counts["read"] == counts["kept_answerable"] + counts["kept_unanswerable"] + sum(
        v for k, v in counts.items() if k.startswith("skipped_")
    )


@pytest.mark.parametrize("layout", ["original", "simplified"])
def test_answerable_exact_offsets_html_dropped(tmp_path, layout):
    record = nq_record(101)
    counts, squad = convert(tmp_path, [record if layout == "original" else simplified(record)])
    check_counts(counts)
    assert counts["kept_answerable"] == counts["read"] == 1
    assert squad["version"] == "v2.0" and squad["data"][0]["title"] == "Vorbelor"
    [(context, qa)] = questions(squad)
    assert context == CONTEXT and "<" not in context
    assert (
        qa["id"] == "101"
        and qa["question"] == "who founded vorbelor"
        and qa["is_impossible"] is False
    )
    [answer] = qa["answers"]
    assert answer == {"text": "Kesel Nortavez", "answer_start": CONTEXT.index("Kesel")}
    assert (
        context[answer["answer_start"] : answer["answer_start"] + len(answer["text"])]
        == answer["text"]
    )


def test_answer_at_context_edges(tmp_path):
    # First and last words of the long answer (HTML at both ends of the short span).
    records = [nq_record(1, short_answer=(3, 5)), nq_record(2, short_answer=(17, 20))]
    counts, squad = convert(tmp_path, records)
    assert counts["kept_answerable"] == 2
    (c1, q1), (c2, q2) = questions(squad)
    assert q1["answers"] == [{"text": "Vorbelor", "answer_start": 0}]
    assert q2["answers"] == [{"text": "1204 .", "answer_start": len(c2) - len("1204 .")}]


def test_no_short_answer_is_unanswerable(tmp_path):
    counts, squad = convert(tmp_path, [nq_record(5, short_answer=None)])
    check_counts(counts)
    assert counts["kept_unanswerable"] == 1 and counts["kept_answerable"] == 0
    [(context, qa)] = questions(squad)
    assert context == CONTEXT and qa["answers"] == [] and qa["is_impossible"] is True


@pytest.mark.parametrize("skip_yes_no", [False, True])
def test_yes_no(tmp_path, skip_yes_no):
    records = [
        nq_record(1, short_answer=None, yes_no="YES"),
        nq_record(2, short_answer=None, yes_no="NO"),
        nq_record(3),
    ]
    counts, squad = convert(tmp_path, records, skip_yes_no=skip_yes_no)
    check_counts(counts)
    assert counts["kept_answerable"] == 1
    if skip_yes_no:
        assert counts["skipped_yes_no"] == 2 and counts["yes_no_to_unanswerable"] == 0
        assert [qa["id"] for _, qa in questions(squad)] == ["3"]
    else:
        assert counts["yes_no_to_unanswerable"] == 2 and counts["kept_unanswerable"] == 2
        assert [(qa["id"], qa["is_impossible"]) for _, qa in questions(squad)] == [
            ("1", True),
            ("2", True),
            ("3", False),
        ]


def test_no_long_answer_and_bad_short_answers_are_skipped(tmp_path):
    records = [
        nq_record(1, long_answer=None, short_answer=None),
        nq_record(2, short_answer=(21, 25)),  # in the other paragraph: outside the long answer
        nq_record(3, short_answer=(12, 13)),  # "<B>" only
        nq_record(
            4, long_answer=(19, 21), short_answer=None
        ),  # "</P> <P>": markup, nothing to read
        nq_record(5),
    ]
    counts, squad = convert(tmp_path, records)
    check_counts(counts)
    assert counts["skipped_no_long_answer"] == 2 and counts["skipped_bad_short_answer"] == 2
    assert [qa["id"] for _, qa in questions(squad)] == ["5"]


def test_malformed_lines_counted_or_strict(tmp_path, caplog):
    broken = nq_record(4)
    broken["annotations"][0]["long_answer"]["end_token"] = 999
    lines = [
        nq_record(1),
        "{not json",
        json.dumps({"example_id": 2}),
        "",
        "[1, 2]",
        json.dumps(broken),
        nq_record(5),
    ]
    counts, squad = convert(tmp_path, lines, name="mixed.jsonl")
    check_counts(counts)
    assert (
        counts["skipped_malformed"] == 4 and counts["kept_answerable"] == 2 and counts["read"] == 6
    )
    assert [qa["id"] for _, qa in questions(squad)] == ["1", "5"]
    assert "mixed.jsonl line 2:" in caplog.text and "mixed.jsonl line 6:" in caplog.text

    out = str(tmp_path / "strict.json")
    with pytest.raises(
        nq_to_squad.ConversionError, match=r"mixed\.jsonl line 2: not valid JSON.*--strict"
    ):
        nq_to_squad.convert_files([str(tmp_path / "mixed.jsonl")], out, strict=True)
    assert not os.path.exists(out) and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_multiple_inputs_gz_and_plain_max_examples(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl.gz", [nq_record(1), nq_record(2, short_answer=None)])
    second = write_jsonl(tmp_path / "b.jsonl", [simplified(nq_record(3)), nq_record(4)])
    misnamed = write_jsonl(
        tmp_path / "c.jsonl", [nq_record(6)], gz=True
    )  # gzip found by its magic bytes
    out = str(tmp_path / "out" / "squad.json")
    counts = nq_to_squad.convert_files([first, second, misnamed], out)
    check_counts(counts)
    assert (
        counts["read"] == 5 and counts["kept_answerable"] == 4 and counts["kept_unanswerable"] == 1
    )
    with open(out, encoding="utf-8") as f:
        assert [qa["id"] for _, qa in questions(json.load(f))] == ["1", "2", "3", "4", "6"]

    counts = nq_to_squad.convert_files([first, second], out, max_examples=3)
    assert counts["read"] == 3
    with open(out, encoding="utf-8") as f:
        assert [qa["id"] for _, qa in questions(json.load(f))] == ["1", "2", "3"]

    # The same input twice repeats every example_id: the repeats are malformed, not duplicates in the output.
    counts = nq_to_squad.convert_files([first, first], out)
    assert (
        counts["skipped_malformed"] == 2
        and counts["kept_answerable"] + counts["kept_unanswerable"] == 2
    )


def test_unreadable_inputs_name_the_file(tmp_path):
    with pytest.raises(nq_to_squad.ConversionError, match="missing.jsonl.gz: no such file"):
        nq_to_squad.convert_files([str(tmp_path / "missing.jsonl.gz")], str(tmp_path / "o.json"))
    whole = gzip.compress(b"".join(json.dumps(nq_record(i)).encode() + b"\n" for i in range(3)))
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) - 40])
    with pytest.raises(
        nq_to_squad.ConversionError, match=r"cut\.jsonl\.gz: reading failed .*truncated or corrupt"
    ):
        nq_to_squad.convert_files([str(tmp_path / "cut.jsonl.gz")], str(tmp_path / "o.json"))
    assert not os.path.exists(tmp_path / "o.json")


def test_output_is_read_by_the_trials_reader(tmp_path):
    records = [
        nq_record(1),
        nq_record(2, short_answer=None),
        nq_record(3, short_answer=None, yes_no="NO"),
        simplified(nq_record(4, short_answer=(21, 25), long_answer=(20, 27))),
    ]
    out = str(tmp_path / "squad.json")
    nq_to_squad.convert_files([write_jsonl(tmp_path / "nq.jsonl.gz", records)], out)
    examples = data.read_squad(out, "train")
    assert examples.skipped == 0 and examples.ids == ["1", "2", "3", "4"]
    assert examples.is_impossible == [False, True, True, False]
    assert examples.answer_text == ["Kesel Nortavez", "", "", "Its capital is Ravon"]
    assert examples.contexts[examples.context_index[3]] == "Its capital is Ravon ."


def test_cli_prints_counts(tmp_path):
    source = write_jsonl(
        tmp_path / "nq.jsonl.gz",
        [
            nq_record(1),
            nq_record(2, long_answer=None, short_answer=None),
            "oops",
            nq_record(3, short_answer=None, yes_no="YES"),
        ],
    )
    out = tmp_path / "squad.json"
    script = os.path.join(ROOT, "tools", "nq_to_squad.py")
    run = subprocess.run(
        [sys.executable, script, source, "-o", str(out), "--skip-yes-no"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert counts == {
        "read": 4,
        "kept_answerable": 1,
        "kept_unanswerable": 0,
        "yes_no_to_unanswerable": 0,
        "skipped_yes_no": 1,
        "skipped_no_long_answer": 1,
        "skipped_bad_short_answer": 0,
        "skipped_malformed": 1,
    }
    assert "line 3" in run.stderr and json.loads(out.read_text())["version"] == "v2.0"

    run = subprocess.run(
        [sys.executable, script, source, "-o", str(tmp_path / "strict.json"), "--strict"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and "nq.jsonl.gz line 3: not valid JSON" in run.stderr
    assert not (tmp_path / "strict.json").exists()


@pytest.fixture
def s3(monkeypatch):
    """A boto3 S3 client against a local moto server; boto3 in the tool reaches it via the environment."""
    server_module = pytest.importorskip("moto.server")
    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket="nq-data")
        yield client
    finally:
        server.stop()


def test_s3_inputs_streamed(tmp_path, s3):
    gz = gzip.compress(b"".join(json.dumps(nq_record(i)).encode() + b"\n" for i in (1, 2)))
    s3.put_object(Bucket="nq-data", Key="dev/nq-dev-00.jsonl.gz", Body=gz)
    s3.put_object(
        Bucket="nq-data", Key="dev/nq-dev-01.jsonl", Body=json.dumps(nq_record(3)).encode() + b"\n"
    )
    out = str(tmp_path / "squad.json")
    counts = nq_to_squad.convert_files(
        ["s3://nq-data/dev/nq-dev-00.jsonl.gz", "s3://nq-data/dev/nq-dev-01.jsonl"], out
    )
    assert counts["read"] == 3 and counts["kept_answerable"] == 3
    assert data.read_squad(out, "train").ids == ["1", "2", "3"]
    with pytest.raises(
        nq_to_squad.ConversionError, match="s3://nq-data/nope.jsonl.gz: cannot open"
    ):
        nq_to_squad.convert_files(["s3://nq-data/nope.jsonl.gz"], out)
