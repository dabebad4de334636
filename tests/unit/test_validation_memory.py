"""Validation streams: a 200 MB JSONL file must not cost 200 MB of memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

MEASURE = """
import sys
from core.datasets import validate
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak resident set to now
def status(key): return int([l for l in open('/proc/self/status') if l.startswith(key)][0].split()[1])
before = status('VmRSS')
with open(sys.argv[1], 'rb') as f:
    report = validate(f, 'jsonl')
print(report.n_examples, len(report.problems), (status('VmHWM') - before) // 1024)
"""


def test_validating_200_mb_keeps_peak_memory_growth_under_150_mb(tmp_path: Path) -> None:
    line = (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "question " * 40},
                    {"role": "assistant", "content": "answer " * 40},
                ]
            }
        )
        + "\n"
    )
    bad = '{"messages": [{"role": "user", "content": "no reply"}]}\n'
    copies = 200 * 1024 * 1024 // len(line)
    path = tmp_path / "big.jsonl"
    with path.open("w") as out:
        for i in range(copies):
            out.write(bad if i % 50_000 == 49_999 else line)
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, cwd=ROOT, check=True
    )
    examples, problems, growth_mb = map(int, out.stdout.split())
    assert problems == copies // 50_000 and examples == copies - problems
    assert growth_mb < 150, f"peak memory grew by {growth_mb} MB"
