"""SQuAD records written in Hugging Face datasets' flat layout, for the layout tests."""


def flat_records(d):
    return [
        {
            "id": qa["id"],
            "title": a["title"],
            "context": p["context"],
            "question": qa["question"],
            "answers": {
                "text": [x["text"] for x in qa["answers"]],
                "answer_start": [x["answer_start"] for x in qa["answers"]],
            },
        }
        for a in d["data"]
        for p in a["paragraphs"]
        for qa in p["qas"]
    ]


def write_parquet(records, path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The hub's squad_v2 schema: answers a struct of two lists.
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("title", pa.string()),
            ("context", pa.string()),
            ("question", pa.string()),
            (
                "answers",
                pa.struct(
                    [("text", pa.list_(pa.string())), ("answer_start", pa.list_(pa.int32()))]
                ),
            ),
        ]
    )
    pq.write_table(pa.Table.from_pylist(records, schema=schema), str(path))
