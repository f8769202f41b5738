"""Generate SQuAD 2.0-format train/dev files for local runs and tests.

The shape follows the real set: paragraph-level contexts of about 120 words, several questions per
paragraph, about one third unanswerable (a question about a fact the paragraph does not state, in
the style of SQuAD 2.0's adversarial questions), answers cut from the context with their character
offsets, and several gold answers per dev question. Deterministic for a given seed.

    python tools/make_squad_data.py OUT_DIR [--train-questions N] [--dev-questions N] [--seed S]
"""

import argparse
import json
import os
import random

MONTHS = (
    "January February March April May June July August September October November December".split()
)
FILLER = [
    "Many visitors arrive during the warm season.",
    "Local markets sell bread, cheese and dried fruit.",
    "The climate is mild for most of the year.",
    "Historians still debate several details of this period.",
    "A small museum near the square displays old maps.",
    "Trade along the coast grew steadily over the centuries.",
    "Several festivals are held in the old town every year.",
    "The region is known for its quiet villages and long roads.",
]
# (relation, sentence template, question templates, answer kind)
RELATIONS = [
    (
        "capital",
        "The capital of {s} is {o}.",
        ["What is the capital of {s}?", "Which city is the capital of {s}?"],
        "place",
    ),
    (
        "founder",
        "{s} was founded by {o}.",
        ["Who founded {s}?", "By whom was {s} founded?"],
        "person",
    ),
    (
        "year",
        "{s} was established in {o}.",
        ["When was {s} established?", "In what year was {s} established?"],
        "year",
    ),
    (
        "river",
        "The {o} river flows through {s}.",
        ["Which river flows through {s}?", "What river runs through {s}?"],
        "river",
    ),
    (
        "leader",
        "{s} is currently led by {o}.",
        ["Who leads {s}?", "Who is the current leader of {s}?"],
        "person",
    ),
    (
        "population",
        "About {o} people live in {s}.",
        ["How many people live in {s}?", "What is the population of {s}?"],
        "number",
    ),
    (
        "export",
        "The main export of {s} is {o}.",
        ["What is the main export of {s}?", "What does {s} mainly export?"],
        "good",
    ),
    (
        "festival",
        "The great festival of {s} takes place in {o}.",
        [
            "When does the great festival of {s} take place?",
            "In which month is the festival of {s}?",
        ],
        "month",
    ),
]
GOODS = [
    "copper",
    "wool",
    "salt",
    "timber",
    "olive oil",
    "silk",
    "glass beads",
    "tea",
    "iron tools",
    "amber",
]


def _name_pool(syllables, endings, size, seed):
    """A fixed pool of invented names of one kind. Each kind has its own sound (people, cities,
    regions and rivers are told apart by their look, as in real text), and drawing from a pool, as
    real text reuses names, keeps each name frequent enough to be one piece of the tiny vocabulary."""
    rng, pool = random.Random(seed), []
    while len(pool) < size:
        word = (
            "".join(rng.choice(syllables) for _ in range(rng.randint(1, 2))) + rng.choice(endings)
        ).capitalize()
        if word not in pool:
            pool.append(word)
    return pool


PLACE_SYLLABLES = "ka lo mi ra ten vor zu bel dra fin gor hal".split()
PERSON_SYLLABLES = "ish jun kes lum mar nor pel quin ros sul tav vin".split()
NAMES = {
    "region": _name_pool(PLACE_SYLLABLES, ["ia", "or", "and"], 120, 1),
    "place": _name_pool(PLACE_SYLLABLES, ["burg", "ton", "mere"], 120, 2),
    "river": _name_pool(PLACE_SYLLABLES, ["ava", "ine"], 60, 3),
    "first": _name_pool(PERSON_SYLLABLES, ["o", "a", "el"], 80, 4),
    "last": _name_pool(PERSON_SYLLABLES, ["son", "ez", "ard"], 80, 5),
}


def name(rng, kind="region"):
    return rng.choice(NAMES[kind])


def value(rng, kind):
    if kind in ("place", "river"):
        return name(rng, kind)
    if kind == "person":
        return f"{name(rng, 'first')} {name(rng, 'last')}"
    if kind == "year":
        return str(rng.randint(1100, 1990))
    if kind == "number":
        return f"{rng.randint(2, 900)},{rng.randint(0, 999):03d}"
    if kind == "good":
        return rng.choice(GOODS)
    return rng.choice(MONTHS)


def paragraph(rng, pid, questions_per_paragraph, n_variants, filler=(4, 7)):
    """One paragraph about one subject: some of its facts among filler sentences (how many: a
    number in the `filler` range; beyond len(FILLER), some repeat), and questions."""
    subjects = [name(rng)]
    facts = []  # (subject, relation index, object)
    for s in subjects:
        for r in rng.sample(range(len(RELATIONS)), rng.randint(4, 6)):
            facts.append((s, r, value(rng, RELATIONS[r][3])))
    sentences = [(RELATIONS[r][1].format(s=s, o=o), (s, r, o)) for s, r, o in facts]
    pool = FILLER * -(-filler[1] // len(FILLER))
    sentences += [(f, None) for f in rng.sample(pool, rng.randint(*filler))]
    rng.shuffle(sentences)
    context, located = "", []
    for text, fact in sentences:
        context += ("" if not context else " ") + text
        if fact:
            s, r, o = fact
            # Templates hold one {o}; find it at the end of the sentence prefix built so far.
            before = RELATIONS[r][1].split("{o}")[0].format(s=s)
            located.append((fact, len(context) - len(text) + len(before)))
    qas = []
    unasked = list(located)
    rng.shuffle(unasked)
    for qi in range(questions_per_paragraph):
        qid = f"{pid:06x}{qi:02x}" + "".join(rng.choice("0123456789abcdef") for _ in range(16))
        if rng.random() < 1 / 3:
            # Unanswerable: a relation this paragraph never states for a subject it mentions.
            s = rng.choice(subjects)
            stated = {r for fs, r, _ in facts if fs == s}
            r = rng.choice([r for r in range(len(RELATIONS)) if r not in stated])
            plausible = [(o, start) for (fs, fr, o), start in located if fs == s][:1]
            qas.append(
                {
                    "id": qid,
                    "question": rng.choice(RELATIONS[r][2]).format(s=s),
                    "answers": [],
                    "is_impossible": True,
                    "plausible_answers": [{"text": o, "answer_start": st} for o, st in plausible],
                }
            )
        else:
            (s, r, o), start = unasked.pop() if unasked else rng.choice(located)
            assert context[start : start + len(o)] == o
            answers = [{"text": o, "answer_start": start}]
            for _ in range(n_variants - 1):
                # Dev sets carry several annotators' answers; some take in the word before.
                wider = context.rfind(" ", 0, start - 1) + 1
                if rng.random() < 0.3 and start > 0:
                    answers.append({"text": context[wider : start + len(o)], "answer_start": wider})
                else:
                    answers.append({"text": o, "answer_start": start})
            qas.append(
                {
                    "id": qid,
                    "question": rng.choice(RELATIONS[r][2]).format(s=s),
                    "answers": answers,
                    "is_impossible": False,
                }
            )
    return {"context": context, "qas": qas}


def make_dataset(n_questions, seed, n_variants, title_prefix, filler=(4, 7)):
    rng = random.Random(seed)
    data, count, pid = [], 0, seed << 16
    while count < n_questions:
        paragraphs = []
        for _ in range(rng.randint(3, 6)):
            k = min(rng.randint(4, 6), n_questions - count)
            if k <= 0:
                break
            paragraphs.append(paragraph(rng, pid, k, n_variants, filler))
            pid += 1
            count += k
        data.append({"title": f"{title_prefix}_{name(rng)}", "paragraphs": paragraphs})
    return {"version": "v2.0", "data": data}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir")
    parser.add_argument("--train-questions", type=int, default=12000)
    parser.add_argument("--dev-questions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for split, n, seed, variants in (
        ("train", args.train_questions, args.seed, 1),
        ("dev", args.dev_questions, args.seed + 1, 3),
    ):
        path = os.path.join(args.out_dir, f"{split}-v2.0.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(make_dataset(n, seed, variants, split), f)
        os.replace(tmp, path)
        print(f"wrote {path} ({n} questions)")


if __name__ == "__main__":
    main()
