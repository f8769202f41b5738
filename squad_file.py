"""The one reader of SQuAD JSON files: `load` (file → JSON) and `paragraphs` / `questions` (the
walk through articles → paragraphs → questions). Feature building (data.read_squad), the trial's
evaluation (evaluation.SquadEvaluator), the metrics command (squad_eval.py) and predict.py read
SQuAD files through it. What a malformed record means stays each caller's: an error naming it, a
counted skip, or nothing to score. Standard library only.
"""

import json
from typing import Any, Callable, Iterator, Optional, Tuple

# bad(kind, where, obj): kind "article" or "paragraph", where "data[a]" or "data[a].paragraphs[p]".
OnBad = Callable[[str, str, Any], None]


class DuplicateKey(ValueError):
    """A key repeated in one JSON object (`load` with unique_keys)."""


def _unique_keys(pairs):
    # json.load keeps the last of repeated keys silently; which value counts would be a guess.
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


def load(path: str, lenient_text: bool = False, unique_keys: bool = False) -> Any:
    """A JSON file as Python objects. Strict by default: UTF-8 bytes, decoded whole, so a
    UnicodeDecodeError's start is a byte offset of the file. `lenient_text` reads it as the official
    evaluation script does (text mode: a UTF-8 byte-order mark and any newline convention).
    Raises OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError and, with
    `unique_keys`, DuplicateKey: each caller words them for its users."""
    if lenient_text:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    else:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    return json.loads(text, object_pairs_hook=_unique_keys if unique_keys else None)


def is_squad(dataset: Any) -> bool:
    """The top level of a SQuAD file: an object with a `data` list of articles."""
    return isinstance(dataset, dict) and isinstance(dataset.get("data"), list)


def _checked(kind: str, where: str, obj: Any) -> None:
    raise ValueError(f"{where}: malformed SQuAD {kind} in data that was expected to be checked")


def paragraphs(articles: list, bad: Optional[OnBad] = None) -> Iterator[Tuple[str, dict]]:
    """(where, paragraph) of every paragraph of a SQuAD file's `data` list, `where` being
    "data[a].paragraphs[p]". An article that is not an object with a "paragraphs" list, or a
    paragraph that is not an object with a "qas" list, goes to `bad` instead (which may raise) and
    is passed over; without `bad` the data must have been checked already (ValueError)."""
    bad = bad or _checked
    for a, article in enumerate(articles):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            bad("article", f"data[{a}]", article)
            continue
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                bad("paragraph", where, paragraph)
                continue
            yield where, paragraph


def questions(articles: list, bad: Optional[OnBad] = None) -> Iterator[Any]:
    """Every entry of every paragraph's "qas" list, as `paragraphs` walks them."""
    for _, paragraph in paragraphs(articles, bad):
        yield from paragraph["qas"]
