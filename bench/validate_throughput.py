"""Validation throughput and memory: this service's streamed validator against loading
the same JSONL with the `datasets` library (the usual way), on a generated file.

    python bench/validate_throughput.py [--size-mb 200]

Each side runs in a fresh process; peak memory is the growth of the process's peak
resident set (VmHWM, reset just before the work) over its resident set at that moment.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

OURS = """
import sys, time
from core.datasets import validate
open('/proc/self/clear_refs', 'w').write('5')  # resets the peak (VmHWM) to now
start_rss = int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])
t = time.perf_counter()
with open(sys.argv[1], 'rb') as f:
    report = validate(f, 'jsonl')
elapsed = time.perf_counter() - t
peak = int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
print(report.n_examples, elapsed, (peak - start_rss) / 1024)
"""

BASELINE = """
import sys, time, tempfile
import datasets
datasets.disable_progress_bars()
open('/proc/self/clear_refs', 'w').write('5')  # resets the peak (VmHWM) to now
start_rss = int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])
t = time.perf_counter()
ds = datasets.load_dataset('json', data_files=sys.argv[1], split='train', cache_dir=tempfile.mkdtemp())
n = sum(1 for row in ds if row['messages'] and any(m['role'] == 'assistant' for m in row['messages']))
elapsed = time.perf_counter() - t
peak = int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
print(n, elapsed, (peak - start_rss) / 1024)
"""


def generate(path: Path, size_mb: int) -> None:
    rng = random.Random(0)
    words = "the model learns to answer questions about data in many shapes and sizes".split()
    with path.open("w") as out:
        while out.tell() < size_mb * 1024 * 1024:
            say = " ".join(rng.choices(words, k=rng.randint(10, 120)))
            out.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "system", "content": "Be helpful."},
                            {"role": "user", "content": say},
                            {"role": "assistant", "content": say[::-1]},
                        ]
                    }
                )
                + "\n"
            )


def run(code: str, path: Path) -> tuple[int, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    n, elapsed, peak_mb = out.stdout.split()[-3:]
    return int(n), float(elapsed), float(peak_mb)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        generate(path, args.size_mb)
        size_mb = path.stat().st_size / 1024 / 1024
        rows = [
            ("ours: streamed validation", *run(OURS, path)),
            ("baseline: datasets.load_dataset('json') + scan", *run(BASELINE, path)),
        ]
    print(f"file: {size_mb:.0f} MB JSONL, {rows[0][1]} examples")
    print(f"{'':50} {'seconds':>8} {'MB/s':>8} {'peak RSS growth MB':>19}")
    for name, _, elapsed, peak in rows:
        print(f"{name:50} {elapsed:8.1f} {size_mb / elapsed:8.1f} {peak:19.0f}")
    print(f"ours/baseline throughput: {rows[1][2] / rows[0][2]:.2f}x")


if __name__ == "__main__":
    main()
