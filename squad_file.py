"""The one reader of SQuAD records. Every consumer (feature building in data.read_squad, the trial's
scoring in evaluation.SquadEvaluator, predict.py --file, data.py audit, squad_eval.py) reads a file
through `read`, so one set of rules decides what is accepted, with the same messages everywhere, and
nothing one of them accepts can crash another.

Layouts, told apart by the content (never the file name):
- SQuAD's own JSON: {"data": [articles]}, article → "paragraphs" → "context" and "qas";
- the flat layout of Hugging Face `datasets` (one record per question: id, title, context,
  question, answers: {"text": [...], "answer_start": [...]}, empty lists when unanswerable) as a
  JSON list, as {"data": [records]}, as JSON lines (what Dataset.to_json writes), or as parquet
  (how the hub serves squad_v2; read with pyarrow, imported only when a parquet file is met).
Flat records are grouped into paragraphs (consecutive records with the same title and context) and
then checked by the same rules as SQuAD's JSON.
"""

import dataclasses
import json
import logging
from typing import Any, Dict, List, Optional

from errors import DataError

logger = logging.getLogger("data")

# What a message advises to skip invalid records: the config key for training, the flag for commands.
TRAINING_ADVICE = "set data.skip_invalid_examples: true"
COMMAND_ADVICE = "pass --skip-invalid"

LAYOUT_HINT = (
    "expected a SQuAD file: an object with a 'data' list of articles (SQuAD's layout), or one record "
    "per question with 'id', 'context', 'question' and 'answers' (the flat layout of Hugging Face "
    "datasets) as JSON, JSON lines or parquet"
)


class DuplicateKey(ValueError):
    """A key repeated in one JSON object."""


def _unique_keys(pairs):
    # json.load keeps the last of repeated keys silently; which value counts would be a guess.
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


def parse_json(text: str) -> Any:
    """JSON text → Python objects, refusing a key repeated in one object (DuplicateKey)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


@dataclasses.dataclass
class Records:
    """The accepted questions of a file. Each question: id, question (stripped), answers (a list of
    {"text", "answer_start"}, [] when unanswerable), is_impossible, context (index into
    `contexts`, shared by the questions of a paragraph)."""

    layout: str
    contexts: List[str]
    questions: List[Dict[str, Any]]
    skipped_questions: int = (
        0  # every question lost, including those of dropped paragraphs/articles
    )

    def articles(self) -> List[dict]:
        """The questions as one SQuAD article, what squad_eval's scoring functions walk."""
        return [{"paragraphs": [{"qas": self.questions}]}]


# ---------------------------------------------------------------------------------------------
# bytes → articles (SQuAD's nesting), whatever the layout
# ---------------------------------------------------------------------------------------------


def _decode(raw: bytes, name: str) -> str:
    bom = raw.startswith(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (some Windows editors write it)
    try:
        return raw[3 if bom else 0 :].decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{name}: not valid UTF-8 at byte {err.start + 3 * bom}. Re-save the file as UTF-8."
        ) from None


def _json_error(name: str, err: Exception, line: Optional[int] = None) -> DataError:
    where = f"{name}: line {line}" if line else name
    if isinstance(err, DuplicateKey):
        return DataError(
            f"{where}: the key {err.args[0]!r} appears twice in one object; keep only one."
        )
    if isinstance(err, json.JSONDecodeError):
        at = (
            f" at line {err.lineno} column {err.colno}"
            if line is None
            else f" at column {err.colno}"
        )
        return DataError(f"{where}: malformed JSON{at}: {err.msg}.")
    # RecursionError (nested too deeply), ValueError (an integer with too many digits)
    return DataError(f"{where}: malformed JSON: {' '.join(str(err).split())}.")


def _parquet_rows(raw: bytes, name: str) -> list:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{name}: a parquet file, and reading parquet needs pyarrow: "
            "pip install -r requirements.txt."
        ) from None
    try:
        return pq.read_table(pa.BufferReader(raw)).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{name}: unreadable parquet file: {err}.") from None


def _is_flat(records: Any) -> bool:
    return (
        isinstance(records, list)
        and bool(records)
        and isinstance(records[0], dict)
        and "paragraphs" not in records[0]
        and ("question" in records[0] or "context" in records[0])
    )


def _nest(records: list) -> List[dict]:
    """Flat records → SQuAD articles. Each question keeps `_where` (record N, 1-based: the line
    number in JSON lines) for messages; a record whose answers are not the flat layout's two lists
    keeps the problem in `_problem`."""
    articles: List[dict] = []
    for i, record in enumerate(records):
        where = f"record {i + 1}"
        if not isinstance(record, dict):
            qa = {
                "_where": where,
                "_problem": f"expected a record object, found a {type(record).__name__}",
            }
            record = {}
        else:
            qa = {k: v for k, v in record.items() if k not in ("title", "context", "answers")}
            qa["_where"] = where
            answers = record.get("answers")
            if isinstance(answers, dict):
                texts, starts = answers.get("text"), answers.get("answer_start")
                if (
                    isinstance(texts, list)
                    and isinstance(starts, list)
                    and len(texts) == len(starts)
                ):
                    qa["answers"] = [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
                else:
                    qa["_problem"] = (
                        "'answers' must hold 'text' and 'answer_start' lists of the same length "
                        "(both empty for an unanswerable question)"
                    )
            elif "answers" in record:
                qa["answers"] = answers  # SQuAD's list of answer objects: checked as SQuAD's
        title, context = record.get("title"), record.get("context")
        last = articles[-1] if articles else None
        if last is None or last["title"] != title:
            last = {"title": title, "paragraphs": []}
            articles.append(last)
        paragraphs = last["paragraphs"]
        if paragraphs and paragraphs[-1]["context"] == context and isinstance(context, str):
            paragraphs[-1]["qas"].append(qa)
        else:
            paragraphs.append({"context": context, "qas": [qa], "_flat": True})
    return articles


def load(path: str, name: Optional[str] = None) -> tuple:
    """(layout, articles) of a file in any accepted layout. Raises OSError (each caller words it)
    and DataError."""
    name = name or path
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:4] == b"PAR1":
        rows = _parquet_rows(raw, name)
        if not _is_flat(rows):
            raise DataError(f"{name}: {LAYOUT_HINT}.")
        return "flat parquet", _nest(rows)
    text = _decode(raw, name)
    try:
        dataset = parse_json(text)
    except json.JSONDecodeError as err:
        lines = text.splitlines()
        if err.msg != "Extra data" or not lines:
            raise _json_error(name, err) from None
        try:
            first = parse_json(lines[0])
        except (ValueError, RecursionError):
            raise _json_error(name, err) from None
        if not isinstance(first, dict) or not _is_flat([first]):
            raise _json_error(name, err) from None
        records = []
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    records.append(parse_json(line))
                except (ValueError, RecursionError) as line_err:
                    raise _json_error(name, line_err, n) from None
        return "flat JSON lines", _nest(records)
    except (ValueError, RecursionError) as err:
        raise _json_error(name, err) from None
    if isinstance(dataset, dict) and _is_flat([dataset]):
        return "flat JSON lines", _nest([dataset])  # one record on one line
    if isinstance(dataset, dict) and _is_flat(dataset.get("data")):
        return "flat JSON", _nest(dataset["data"])
    if _is_flat(dataset):
        return "flat JSON", _nest(dataset)
    if isinstance(dataset, dict) and isinstance(dataset.get("data"), list):
        return "SQuAD JSON", dataset["data"]
    raise DataError(f"{name}: {LAYOUT_HINT}.")


# ---------------------------------------------------------------------------------------------
# articles → accepted questions: the rules
# ---------------------------------------------------------------------------------------------


def _found(obj) -> str:
    if isinstance(obj, dict):
        return f"its keys: {', '.join(map(repr, obj)) or 'none'}"
    return f"a {type(obj).__name__}"


def _count_questions(obj, depth: int = 0) -> int:
    """Questions inside a dropped record, whatever its shape (a misspelled key holds them still)."""
    if depth > 4:
        return 0
    if isinstance(obj, dict):
        if "question" in obj:
            return 1
        obj = list(obj.values())
    if isinstance(obj, list):
        return sum(_count_questions(x, depth + 1) for x in obj)
    return 0


def _answer_problem(answer, i: int, context: str, exact: bool) -> Optional[str]:
    """What is wrong with answers[i] of a question, or None. `exact`: it must sit at its answer_start."""
    if not isinstance(answer, dict):
        return f"answers[{i}] is not an object with 'text' and 'answer_start'"
    text, start = answer.get("text"), answer.get("answer_start")
    if not isinstance(text, str) or not text.strip():
        return f"answers[{i}]: 'text' must be a non-empty string, not {text!r}"
    # bool is an int in Python; a negative start would slice from the end of the context.
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        return f"answers[{i}]: 'answer_start' must be a non-negative integer, not {start!r}"
    if start + len(text) > len(context):
        return (
            f"answers[{i}]: answer_start {start} plus the answer's {len(text)} characters runs past the end "
            f"of the context ({len(context)} characters)"
        )
    if exact and context[start : start + len(text)] != text:
        return (
            f"answer_start {start} does not point at the answer text {text!r} "
            f"(the context there reads {context[start:start + len(text)]!r})"
        )
    return None


def _question_problem(qa: dict, context: str, split: str):
    """(problem, answers, is_impossible) of one question object with a valid id."""
    if "_problem" in qa:
        return qa["_problem"], None, None
    question = qa.get("question")
    impossible = qa.get("is_impossible")
    if not isinstance(question, str) or not question.strip():
        return "empty or missing question", None, None
    if impossible is not None and not isinstance(impossible, bool):  # bool("false") is True
        return f"'is_impossible' must be true or false, not {impossible!r}", None, None
    if impossible is None and "is_impossible" in qa:
        return "'is_impossible' must be true or false, not None", None, None
    if "answers" not in qa:
        # The rule for a missing 'answers': unanswerable only when the record says so; otherwise a
        # misspelled key would silently turn answerable questions into unanswerable ones.
        if impossible is True:
            return None, [], True
        return (
            "answerable question ('is_impossible' false or absent) without answers (no 'answers' "
            "key; an unanswerable question needs 'is_impossible': true)",
            None,
            None,
        )
    answers = qa["answers"]
    if not isinstance(answers, list):
        return f"'answers' must be a list, not {_found(answers)}", None, None
    if impossible is None:
        impossible = not answers  # SQuAD 1.1 and the flat layout: unanswerable = no answers
    if impossible and answers:
        return (
            "'is_impossible' is true but 'answers' is not empty (SQuAD 2.0 keeps an unanswerable "
            "question's spans in 'plausible_answers')",
            None,
            None,
        )
    if not impossible and not answers:
        return "answerable question ('is_impossible' false) without answers", None, None
    for i, ans in enumerate(answers):
        problem = _answer_problem(ans, i, context, split == "train" and i == 0)
        if problem:
            return problem, None, None
    return (
        None,
        [{"text": a["text"], "answer_start": a["answer_start"]} for a in answers],
        impossible,
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def validate(
    articles: list,
    name: str,
    split: str = "validation",
    skip_invalid: bool = False,
    advice: str = TRAINING_ADVICE,
    layout: str = "SQuAD JSON",
    quiet: bool = False,
) -> Records:
    """The accepted questions of `articles`. `split` "train": each question's first answer must sit
    exactly at its answer_start (it becomes the label). An invalid record raises DataError naming
    the file, the record and the fix (`advice`), or with `skip_invalid` (only the bool True) is
    skipped, logged (unless `quiet`) and counted in questions."""
    out = Records(layout, [], [])
    dropped = {"article": [0, 0], "paragraph": [0, 0], "question": [0, 0]}  # records, questions
    seen = set()

    def bad(where, problem, kind="question", questions=1):
        message = f"{name}: {where}: {problem}"
        if skip_invalid is not True:
            raise DataError(f"{message}. Fix the record, or {advice} to skip it.")
        if not quiet:
            logger.warning("skipping %s", message)
        dropped[kind][0] += 1
        dropped[kind][1] += questions

    for a, article in enumerate(articles):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            title = article.get("title") if isinstance(article, dict) else None
            bad(
                f"article data[{a}]" + (f" ({title!r})" if isinstance(title, str) else ""),
                f"expected an object with a 'paragraphs' list, found {_found(article)}",
                "article",
                _count_questions(article),
            )
            continue
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                bad(
                    f"paragraph {where}",
                    f"expected an object with 'context' and a 'qas' list, found {_found(paragraph)}",
                    "paragraph",
                    _count_questions(paragraph),
                )
                continue
            context, qas = paragraph.get("context"), paragraph["qas"]
            if not isinstance(context, str) or not context.strip():
                if paragraph.get("_flat"):  # flat records: each record is a question
                    for qa in qas:
                        qid = qa.get("id")
                        label = f"{qid!r}" if isinstance(qid, str) and qid else qa["_where"]
                        bad(f"question {label}", "empty or missing context")
                elif qas:
                    bad(f"paragraph {where}", "empty or missing context", "paragraph", len(qas))
                continue
            ctx_idx = len(out.contexts)
            out.contexts.append(context)
            for q, qa in enumerate(qas):
                qid = qa.get("id") if isinstance(qa, dict) else None
                slot = (
                    qa.get("_where")
                    if isinstance(qa, dict) and "_where" in qa
                    else f"{where}.qas[{q}]"
                )
                if isinstance(qa, dict) and "_problem" in qa and not isinstance(qid, str):
                    bad(f"question {slot}", qa["_problem"])
                    continue
                if not isinstance(qid, str) or not qid:
                    bad(
                        f"question {slot}",
                        "missing question id (a non-empty string)"
                        if isinstance(qa, dict)
                        else f"expected a question object, found {_found(qa)}",
                    )
                    continue
                if qid in seen:
                    bad(f"question {qid!r}", "duplicate question id")
                    continue
                problem, answers, impossible = _question_problem(qa, context, split)
                if problem:
                    bad(f"question {qid!r}", problem)
                    continue
                seen.add(qid)
                out.questions.append(
                    {
                        "id": qid,
                        "question": qa["question"].strip(),
                        "answers": answers,
                        "is_impossible": impossible,
                        "context": ctx_idx,
                    }
                )
    out.skipped_questions = sum(n for _, n in dropped.values())
    out.skipped_records = sum(r for r, _ in dropped.values())
    if out.skipped_records:
        parts = [
            _plural(records, kind) + ("" if kind == "question" else f" ({_plural(n, 'question')})")
            for kind, (records, n) in dropped.items()
            if records
        ]
        summary = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        total = len(out.questions) + out.skipped_questions
        if not quiet:
            logger.warning(
                "%s: skipped %s: kept %d of %d questions", name, summary, len(out.questions), total
            )
    if not out.questions:
        raise DataError(
            f"{name}: no questions"
            + (" left after skipping the invalid records." if out.skipped_records else " found.")
        )
    return out


def read(
    path: str,
    split: str = "validation",
    skip_invalid: bool = False,
    advice: str = TRAINING_ADVICE,
    name: Optional[str] = None,
    quiet: bool = False,
) -> Records:
    """`load` then `validate`: the accepted questions of a file in any layout. Raises OSError (each
    caller words it for its users) and DataError."""
    name = name or path
    layout, articles = load(path, name)
    return validate(articles, name, split, skip_invalid, advice, layout, quiet)


def questions(articles: list):
    """Every question of checked articles (`Records.articles()` or a file `read` accepted)."""
    for article in articles:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]
