"""`streams.pipeline.gc_pauses.settle`, in a process of its own (it freezes everything alive)."""

from __future__ import annotations

import json
import subprocess
import sys

from streams.pipeline.gc_pauses import YOUNG_THRESHOLD

PROBE = """
import gc, json
from streams.pipeline import gc_pauses
kept = [[i] for i in range(1000)]  # alive at settle: frozen
gc_pauses.settle()
frozen = gc.get_freeze_count()
cycle = []
cycle.append(cycle)  # made after settle: still collected once unreachable
del cycle
print(json.dumps({"frozen": frozen, "threshold": gc.get_threshold()[0], "collected": gc.collect()}))
"""


def test_settle_freezes_what_is_alive_and_later_garbage_is_still_collected() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found["frozen"] >= 1000
    assert found["threshold"] == YOUNG_THRESHOLD
    assert found["collected"] >= 1
