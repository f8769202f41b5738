"""The flat layout of Hugging Face `datasets` (one record per question) as a JSON list, as
{"data": [records]}, as JSON lines (what Dataset.to_json writes by default) and as parquet (how the
hub serves squad_v2): told from the content, read as the nested SQuAD file they came from, refused
with the same rules, cached by content."""

import json
import subprocess
import sys

import make_squad_data
import numpy as np
import pytest
from conftest import ROOT
from squad_layouts import flat_records, write_parquet

import data
import errors
import squad_file

SPEC = data.FeatureSpec(max_seq_length=64, doc_stride=24, max_query_length=16)


def write_layouts(d, tmp_path):
    """{layout: path}, none of them with a telling file name."""
    records = flat_records(d)
    paths = {
        name: tmp_path / f"{name}.data" for name in ("nested", "list", "data", "lines", "parquet")
    }
    paths["nested"].write_text(json.dumps(d))
    paths["list"].write_text(json.dumps(records, indent=1))
    paths["data"].write_text(json.dumps({"version": "flat", "data": records}))
    paths["lines"].write_text("".join(json.dumps(r) + "\n" for r in records))
    write_parquet(records, paths["parquet"])
    return {name: str(p) for name, p in paths.items()}


@pytest.mark.parametrize("split", ["train", "validation"])
def test_every_layout_gives_the_nested_files_examples_and_features(tmp_path, tokenizer, split):
    d = make_squad_data.make_dataset(40, 3, 3 if split == "validation" else 1, split)
    paths = write_layouts(d, tmp_path)
    layouts = {name: squad_file.read(p, split).layout for name, p in paths.items()}
    assert layouts == {
        "nested": "SQuAD JSON",
        "list": "flat JSON",
        "data": "flat JSON",
        "lines": "flat JSON lines",
        "parquet": "flat parquet",
    }
    nested = data.read_squad(paths["nested"], split)
    built = data.featurize(nested, tokenizer, SPEC, training=split == "train")
    for name, path in paths.items():
        got = data.read_squad(path, split)
        assert got == nested, name
        features = data.featurize(got, tokenizer, SPEC, training=split == "train")
        assert features.keys() == built.keys()
        for key in built:
            assert np.array_equal(features[key], built[key]), (name, key)
    # Every answer the flat layout holds, on dev questions with several answers, is scored.
    records = squad_file.read(paths["parquet"], split)
    assert [q["answers"] for q in records.questions] == [
        q["answers"] for q in squad_file.read(paths["nested"], split).questions
    ]


def test_layouts_are_cached_by_content(tmp_path, tokenizer):
    d = make_squad_data.make_dataset(20, 4, 1, "train")
    paths = write_layouts(d, tmp_path)
    cache_dir = str(tmp_path / "cache")
    first = {}
    for name in ("lines", "parquet"):
        features, status = data.load_or_build_features(
            paths[name], tokenizer, SPEC, "train", cache_dir
        )
        first[name] = features
        assert status == "built"
        _, status = data.load_or_build_features(paths[name], tokenizer, SPEC, "train", cache_dir)
        assert status == "loaded"
    for key, array in first["lines"].arrays.items():
        assert np.array_equal(array, first["parquet"].arrays[key]), key


def test_flat_records_are_checked_by_the_same_rules(tmp_path):
    d = make_squad_data.make_dataset(20, 5, 1, "train")
    records = flat_records(d)
    records[3]["answers"]["answer_start"][0] = -1 if records[3]["answers"]["text"] else 0
    records[3]["answers"]["text"] = records[3]["answers"]["text"] or ["x"]
    records[5]["question"] = " "
    path = tmp_path / "flat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(errors.DataError) as err:
        data.read_squad(str(path), "train")
    assert str(err.value).startswith(f"{path}: question {records[3]['id']!r}: answers[0]")
    assert "data.skip_invalid_examples: true" in str(err.value)
    kept = squad_file.read(str(path), "train", skip_invalid=True, quiet=True)
    assert len(kept.questions) == len(records) - 2


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": "a", "question": "Who?"}\n{"id": "b"\n', "line 2: malformed JSON at column"),
        ('{"data": [{"title": "t", "paragraphs": []}]}\n{"x": 1}\n', "malformed JSON at line 2"),
        ("[1, 2]", "expected a SQuAD file"),
        ('{"version": "v2.0"}', "expected a SQuAD file"),
        ('[{"id": "a", "context": "c", "question": "q", "id": "b"}]', "the key 'id' appears twice"),
        (b"PAR1 not really parquet PAR1", "unreadable parquet file"),
        (b"\xef\xbb\xbf" + json.dumps({"data": []}).encode(), "no questions found"),
    ],
    ids=[
        "jsonl-bad-line",
        "json-then-garbage",
        "list",
        "no-data",
        "duplicate-key",
        "parquet-garbage",
        "bom",
    ],
)
def test_bad_files_of_each_layout(tmp_path, content, message):
    path = tmp_path / "file"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(errors.DataError, match=message) as err:
        squad_file.read(str(path))
    assert str(err.value).startswith(str(path))


def test_parquet_of_another_dataset_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"text": ["a"], "label": [1]}), str(path))
    with pytest.raises(errors.DataError, match="expected a SQuAD file"):
        squad_file.read(str(path))


def test_pyarrow_is_imported_only_for_parquet(squad_files):
    code = (
        "import sys, squad_file; squad_file.read(sys.argv[1]); " "print('pyarrow' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, squad_files[1]], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
