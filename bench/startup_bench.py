"""Start-up benchmark (not a test): N processes start at once on a warm feature cache of a large file
and each does what a rank does before its first training batch (data.prepare, then the first batch
of the DataLoader), against one process doing the same, in the same run. Prints one JSON object.

    python bench/startup_bench.py [--questions 100000] [--processes 8]

The N processes form one node (Determined's DistributedContext, local size N), so the node's chief
fetches and hashes the data files and the others wait for it, as in a trial. Two figures, each
N processes against one:
- wall_ratio: from a common start line (every process has imported and connected) until the last
  process holds its first batch. On a machine with fewer cores than N this counts the waits for a
  CPU too: N processes doing one process's work on 2 cores take about N/2 times as long.
- own_ratio: the slowest process's own time, its CPU time (getrusage, every thread) plus the time it
  spent waiting on build locks and on its chief, against one process's. The wait on the chief is
  counted as the chief's own time (CPU + lock waits) in what it was waited for, which the chief
  measures and sends with the keys (cache.WAITED: the wall time of that wait is reported too, as
  barrier_wait_s). Waits for a CPU are left out, so a start-up that serializes shows here and one
  that does not stays near 1.

Corpus: tools/make_squad_data.py (as bench/data_bench.py), tokenizer: the tiny model's,
max_seq_length 384 / doc_stride 128 / max_query_length 64 as in the cluster configs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
import torch
import cache, data
from determined import core
rank, size = int(sys.argv[1]), int(sys.argv[2])
distributed = None
if size > 1:
    distributed = core.DistributedContext(rank=rank, size=size, local_rank=rank, local_size=size,
                                          cross_rank=0, cross_size=1, port_offset={port_offset})
open(os.path.join({run!r}, f"ready.{{rank}}"), "w").close()
while not os.path.exists(os.path.join({run!r}, "go")):
    time.sleep(0.005)
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
started, cpu_started = time.time(), cpu()
features, info = data.prepare({hp!r}, {data_conf!r}, workers=1, distributed=distributed)
f = features["train"]
loader = torch.utils.data.DataLoader(data.FeatureDataset(f), batch_size=32, shuffle=True,
                                     collate_fn=data.Collator(f.arrays))
batch = next(iter(loader))
done = time.time()
print(json.dumps({{"rank": rank, "done": done, "seconds": done - started, "cpu_s": cpu() - cpu_started,
                  "waited": cache.WAITED, "status": info["report"]["train"]["status"]}}))
if distributed is not None:
    distributed.close()
"""


def run(n: int, code: str, run_dir: str) -> dict:
    """Starts n processes, lets them go together once all are ready; their reports and the wall time."""
    for name in os.listdir(run_dir):
        os.remove(os.path.join(run_dir, name))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(rank), str(n)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for rank in range(n)
    ]
    while len([x for x in os.listdir(run_dir) if x.startswith("ready.")]) < n:
        if any(p.poll() not in (None, 0) for p in procs):
            raise SystemExit("a benchmark process failed before the start line")
        time.sleep(0.01)
    go = time.time()
    open(os.path.join(run_dir, "go"), "w").close()
    reports = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a benchmark process exited with {p.returncode}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    own = [r["cpu_s"] + r["waited"]["lock"] + r["waited"]["chief_own"] for r in reports]
    return {
        "wall_s": max(r["done"] for r in reports) - go,
        "own_s": max(own),
        "cpu_s": max(r["cpu_s"] for r in reports),
        "lock_wait_s": max(r["waited"]["lock"] for r in reports),
        "barrier_wait_s": max(r["waited"]["barrier"] for r in reports),
        "chief_own_s": max(r["waited"]["chief_own"] for r in reports),
        "statuses": sorted({r["status"] for r in reports}),
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=100000)
    parser.add_argument("--processes", type=int, default=8)
    args = parser.parse_args()
    import make_squad_data
    import make_tiny_model

    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        model = make_tiny_model.build(os.path.join(tmp, "tiny"))
        files = {}
        for split, n in (("train", args.questions), ("validation", 1000)):
            files[split] = os.path.join(tmp, f"{split}.json")
            with open(files[split], "w") as f:
                json.dump(make_squad_data.make_dataset(n, 11, 1, split, filler=(4, 7)), f)
        run_dir = os.path.join(tmp, "run")
        os.makedirs(run_dir)
        fmt = dict(
            root=ROOT,
            run=run_dir,
            port_offset=os.getpid() % 1000,
            hp={"pretrained_model_name": model, "global_batch_size": 32},
            data_conf={
                "train_file": files["train"],
                "validation_file": files["validation"],
                "use_bind_mount": False,
                "cache_dir": os.path.join(tmp, "cache"),
            },
        )
        warmup = run(1, CHILD.format(**fmt), run_dir)  # builds the entries: the cache is warm after
        one = run(1, CHILD.format(**fmt), run_dir)
        many = run(args.processes, CHILD.format(**fmt), run_dir)
    print(
        json.dumps(
            {
                "questions": args.questions,
                "processes": args.processes,
                "cpu_cores": os.cpu_count(),
                "warmup_statuses": warmup["statuses"],
                "one": {k: round(v, 3) if isinstance(v, float) else v for k, v in one.items()},
                "many": {k: round(v, 3) if isinstance(v, float) else v for k, v in many.items()},
                "wall_ratio": round(many["wall_s"] / one["wall_s"], 2),
                "own_ratio": round(many["own_s"] / one["own_s"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
