"""Convert Google's Natural Questions (NQ) into a SQuAD 2.0 file the trial can train on.

    python tools/nq_to_squad.py INPUT... -o OUT.json [--skip-yes-no] [--max-examples N] [--strict]

INPUT is an NQ .jsonl.gz or plain .jsonl file, a local path or s3://bucket/key (read with boto3).
Each is streamed line by line; nothing is decompressed to disk. Both NQ layouts are read: the
original one (`document_tokens`, every token marked `html_token`) and the "simplified" one
(`document_text`, tokens separated by single spaces, HTML tokens written as <...>).

Every NQ example becomes one article with one paragraph and one question, from its first annotation:
- context: the long answer's tokens, HTML tokens dropped, joined by single spaces. NQ's own offsets
  are bytes of the HTML page, so the answer's character offset is recomputed from this text.
- answer: the first short answer's non-HTML tokens (answerable).
- no long answer, or one of markup only: skipped (skipped_no_long_answer); there is no passage to read.
- a long answer but no short answer: unanswerable ("answers": [], "is_impossible": true).
- a yes/no answer: SQuAD answers are spans, and "yes" or "no" is not a span of the context, so by
  default the question becomes unanswerable (yes_no_to_unanswerable). With --skip-yes-no the
  question is kept out of the unanswerable set instead: it is skipped (skipped_yes_no), so the
  no-answer label only ever means "the passage does not answer it".
- a short answer outside the long answer, or made only of HTML tokens: skipped
  (skipped_bad_short_answer).
- a line that is not valid JSON or lacks required fields, or a repeated example_id: skipped and
  logged with its file and line (skipped_malformed); with --strict it stops the run instead.

--max-examples N stops after N NQ examples (non-blank input lines, over all inputs together) have
been read. The output is written atomically; the last stdout line is a JSON object of counts, where
read = kept_answerable + kept_unanswerable + every skipped_* count, and yes_no_to_unanswerable is the
part of kept_unanswerable that came from yes/no answers.
"""

import argparse
import contextlib
import gzip
import json
import logging
import os
import re
import sys
import urllib.parse
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import errors  # noqa: E402
import files  # noqa: E402

logger = logging.getLogger("nq_to_squad")

COUNTS = (
    "read",
    "kept_answerable",
    "kept_unanswerable",
    "yes_no_to_unanswerable",
    "skipped_yes_no",
    "skipped_no_long_answer",
    "skipped_bad_short_answer",
    "skipped_malformed",
)
# Simplified NQ keeps HTML tokens in document_text but drops the html_token flag: "<P>", "</Td>", ...
HTML_TOKEN = re.compile(r"</?[A-Za-z][^<>\s]*>")
PROGRESS_EVERY = 10000


class ConversionError(errors.UserError, ValueError):
    """Unreadable input, or a malformed record under --strict: names the file, the line and what to do."""


class Malformed(Exception):
    """A line that is not a usable NQ example (a skip, or with --strict a ConversionError)."""


# ---------------------------------------------------------------------------------------------
# input: local path | s3:// → stream of lines
# ---------------------------------------------------------------------------------------------


def _read_errors():
    """Exceptions that mean the stream itself broke (truncated or corrupt gzip, lost connection)."""
    errors = (OSError, EOFError, zlib.error)
    try:
        import botocore.exceptions
    except ImportError:  # boto3 is only needed for s3:// inputs
        return errors
    return errors + (botocore.exceptions.BotoCoreError,)


def _open(source):
    """(binary stream, [things to close]) for a local path or s3://bucket/key, gunzipped on the fly."""
    if source.startswith("s3://"):
        import boto3  # only needed for s3:// inputs
        import botocore.exceptions

        bucket, _, key = source[len("s3://") :].partition("/")
        if not bucket or not key:
            raise ConversionError(f"{source}: expected s3://bucket/key.")
        try:
            raw = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise ConversionError(
                f"{source}: cannot open ({err}). Check the bucket, the key and the "
                "AWS credentials."
            ) from err
        # A streaming body cannot be peeked at without consuming it: trust the name.
        gzipped = key.endswith(".gz")
    else:
        if not os.path.isfile(source):
            raise ConversionError(f"{source}: no such file. Pass a local path or s3://bucket/key.")
        raw = open(source, "rb")
        # Local files can be checked for the gzip magic number, so a misnamed file still reads.
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
    if gzipped:
        stream = gzip.GzipFile(fileobj=raw)
        return stream, [stream, raw]  # GzipFile does not close a fileobj it was given
    return raw, [raw]


def _split_lines(stream, chunk=1 << 20):
    """The lines of a binary stream, without their newlines. One reader for files, gzip streams and
    S3 bodies alike; NQ lines run to megabytes, so the buffer grows as needed."""
    buffer = bytearray()
    while True:
        block = stream.read(chunk)
        if not block:
            break
        buffer += block
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end == -1:
                break
            yield bytes(buffer[start:end])
            start = end + 1
        del buffer[:start]
    if buffer:
        yield bytes(buffer)


def iter_lines(source):
    """Yield (line number from 1, line bytes) of one input; a broken stream raises ConversionError."""
    stream, closers = _open(source)
    lines, errors = _split_lines(stream), _read_errors()
    number = 0
    try:
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except errors as err:
                raise ConversionError(
                    f"{source}: reading failed after line {number} ({err!r}). The file "
                    "is truncated or corrupt; download it again."
                ) from err
            number += 1
            yield number, line
    finally:
        for closer in closers:
            closer.close()


# ---------------------------------------------------------------------------------------------
# one NQ example → one SQuAD article
# ---------------------------------------------------------------------------------------------


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _span_tokens(record, start, end):
    """Tokens [start, end) of the document as (text, is_html), from either NQ layout. Only the span
    is looked at: a document holds thousands of tokens and the long answer a few hundred."""
    if "document_tokens" in record:
        tokens = record["document_tokens"]
        if not isinstance(tokens, list):
            raise Malformed("'document_tokens' is not a list")
    else:
        text = record.get("document_text")
        if not isinstance(text, str):
            raise Malformed(
                "neither 'document_tokens' (original NQ) nor 'document_text' (simplified NQ)"
            )
        tokens = None
        words = text.split(" ")
    size = len(tokens if tokens is not None else words)
    if not 0 <= start < end <= size:
        raise Malformed(
            f"long answer tokens [{start}, {end}) are not within the document's {size} tokens"
        )
    if tokens is None:
        return [(word, bool(HTML_TOKEN.fullmatch(word))) for word in words[start:end]]
    result = []
    for i in range(start, end):
        token = tokens[i]
        if (
            not isinstance(token, dict)
            or not isinstance(token.get("token"), str)
            or not isinstance(token.get("html_token"), bool)
        ):
            raise Malformed(
                f"document_tokens[{i}] lacks a string 'token' and a boolean 'html_token'"
            )
        result.append((token["token"], token["html_token"]))
    return result


def _title(record):
    """document_title, or for simplified NQ (which has none) the title in document_url."""
    title = record.get("document_title")
    if isinstance(title, str):
        return title
    url = record.get("document_url")
    if isinstance(url, str):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url.replace("&amp;", "&")).query)
        if query.get("title"):
            return query["title"][0].replace("_", " ")
    return ""


def _annotation(record):
    """(example_id, question, long_start, long_end, short answers, yes_no) of the first annotation."""
    example_id = record.get("example_id")
    if not (_int(example_id) or (isinstance(example_id, str) and example_id)):
        raise Malformed("missing 'example_id'")
    question = record.get("question_text")
    if not isinstance(question, str) or not question.strip():
        raise Malformed("missing or empty 'question_text'")
    annotations = record.get("annotations")
    if not isinstance(annotations, list) or not annotations or not isinstance(annotations[0], dict):
        raise Malformed("no 'annotations' list with an annotation in it")
    first = annotations[0]
    long_answer = first.get("long_answer")
    if (
        not isinstance(long_answer, dict)
        or not _int(long_answer.get("start_token"))
        or not _int(long_answer.get("end_token"))
    ):
        raise Malformed(
            "annotation has no 'long_answer' with integer 'start_token' and 'end_token'"
        )
    shorts = first.get("short_answers")
    if not isinstance(shorts, list) or not all(
        isinstance(s, dict) and _int(s.get("start_token")) and _int(s.get("end_token"))
        for s in shorts
    ):
        raise Malformed(
            "annotation has no 'short_answers' list of integer 'start_token'/'end_token' spans"
        )
    yes_no = first.get("yes_no_answer")
    if yes_no not in ("NONE", "YES", "NO"):
        raise Malformed(f"'yes_no_answer' is {yes_no!r}, not NONE, YES or NO")
    return (
        str(example_id),
        question,
        long_answer["start_token"],
        long_answer["end_token"],
        shorts,
        yes_no,
    )


def convert_record(record, skip_yes_no=False):
    """(outcome, article or None) for one parsed NQ line; outcome is a COUNTS key. Raises Malformed."""
    if not isinstance(record, dict):
        raise Malformed("not a JSON object")
    example_id, question, long_start, long_end, shorts, yes_no = _annotation(record)
    if long_start == -1:
        return "skipped_no_long_answer", None
    tokens = _span_tokens(
        record, long_start, long_end
    )  # tokens[i - long_start] is document token i

    words, spans, position = (
        [],
        {},
        0,
    )  # spans: document token index -> (start, end) character offsets
    for i in range(long_start, long_end):
        text, is_html = tokens[i - long_start]
        text = text.strip()  # a stray space in a token would otherwise end up in an answer's edge
        if is_html or not text:
            continue
        spans[i] = (position, position + len(text))
        words.append(text)
        position += len(text) + 1
    context = " ".join(words)
    if not context:
        return "skipped_no_long_answer", None  # a long answer of markup only: still nothing to read

    def article(answers):
        qa = {
            "id": example_id,
            "question": question,
            "answers": answers,
            "is_impossible": not answers,
        }
        return {"title": _title(record), "paragraphs": [{"context": context, "qas": [qa]}]}

    if yes_no != "NONE":
        if skip_yes_no:
            return "skipped_yes_no", None
        return "yes_no_to_unanswerable", article([])
    if not shorts:
        return "kept_unanswerable", article([])
    short_start, short_end = shorts[0]["start_token"], shorts[0]["end_token"]
    if not long_start <= short_start < short_end <= long_end:
        return "skipped_bad_short_answer", None
    kept = [i for i in range(short_start, short_end) if i in spans]
    if not kept:
        return "skipped_bad_short_answer", None  # only markup: no text to point at
    answer = " ".join(tokens[i - long_start][0].strip() for i in kept)
    answer_start = spans[kept[0]][0]
    # The span's kept tokens are consecutive words of the context, so its text is a slice of it.
    assert context[answer_start : answer_start + len(answer)] == answer, (
        example_id,
        answer_start,
        answer,
    )
    return "kept_answerable", article([{"text": answer, "answer_start": answer_start}])


# ---------------------------------------------------------------------------------------------
# inputs → SQuAD 2.0 file
# ---------------------------------------------------------------------------------------------


def _lines_of_all(sources):
    """Yield (source, line number, line) over every input in order, closing each when done."""
    for source in sources:
        with contextlib.closing(iter_lines(source)) as lines:
            for number, line in lines:
                yield source, number, line


def convert_files(sources, out_path, skip_yes_no=False, max_examples=None, strict=False):
    """Convert NQ inputs into the SQuAD 2.0 file `out_path` and return the counts. Articles are
    written as they come (NQ's train set does not need to fit in memory), into a temporary file
    that replaces `out_path` only once complete."""
    # A mistyped local path should fail now, not after an hour spent on the inputs before it.
    missing = [s for s in sources if not s.startswith("s3://") and not os.path.isfile(s)]
    if missing:
        raise ConversionError(
            f"{', '.join(missing)}: no such file. Pass local paths or s3://bucket/key."
        )
    counts = dict.fromkeys(COUNTS, 0)
    seen = set()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with files.atomic_file(out_path) as tmp:
        with (
            open(tmp, "w", encoding="utf-8") as out,
            contextlib.closing(_lines_of_all(sources)) as lines,
        ):
            out.write('{"version": "v2.0", "data": [')
            written = 0
            for source, number, line in lines:
                if max_examples is not None and counts["read"] >= max_examples:
                    break
                if not line.strip():
                    continue
                counts["read"] += 1
                if counts["read"] % PROGRESS_EVERY == 0:
                    logger.info("read %d examples, kept %d", counts["read"], written)
                try:
                    try:
                        record = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError) as err:
                        raise Malformed(f"not valid JSON ({err})") from err
                    outcome, article = convert_record(record, skip_yes_no)
                    if article is not None:
                        qid = article["paragraphs"][0]["qas"][0]["id"]
                        if qid in seen:
                            raise Malformed(
                                f"example_id {qid} was already read (an input given twice?)"
                            )
                        seen.add(qid)
                except Malformed as err:
                    if strict:
                        raise ConversionError(
                            f"{source} line {number}: {err}. Fix or remove the line, or run "
                            "without --strict to skip it."
                        ) from err
                    logger.warning("%s line %d: skipping malformed record: %s", source, number, err)
                    counts["skipped_malformed"] += 1
                    continue
                counts[outcome] += 1
                if outcome == "yes_no_to_unanswerable":
                    counts["kept_unanswerable"] += 1
                if article is not None:
                    out.write((", " if written else "") + json.dumps(article, ensure_ascii=False))
                    written += 1
            out.write("]}\n")
    kept = counts["kept_answerable"] + counts["kept_unanswerable"]
    logger.info(
        "wrote %s (%d questions: %d answerable, %d unanswerable)",
        out_path,
        kept,
        counts["kept_answerable"],
        counts["kept_unanswerable"],
    )
    if not kept:
        logger.warning("%s holds no questions; the trial will refuse it", out_path)
    return counts


def main(argv=None):
    parser = errors.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="NQ .jsonl.gz or .jsonl: a path or s3://bucket/key",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT.json", help="the SQuAD 2.0 file to write"
    )
    parser.add_argument(
        "--skip-yes-no",
        action="store_true",
        help="skip yes/no questions instead of making them unanswerable",
    )
    parser.add_argument(
        "--max-examples", type=int, metavar="N", help="stop after reading N NQ examples"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first malformed line instead of skipping it",
    )
    args = parser.parse_args(argv)
    if args.max_examples is not None and args.max_examples < 0:
        parser.error("--max-examples must be 0 or more")
    errors.setup_logging()
    counts = convert_files(
        args.inputs, args.output, args.skip_yes_no, args.max_examples, args.strict
    )
    print(json.dumps(counts))


if __name__ == "__main__":
    errors.run_command(main)
