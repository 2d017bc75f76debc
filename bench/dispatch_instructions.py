"""Instructions per email of `Dispatcher.tick()`, counted by Valgrind: the same count on a
loaded machine as on a quiet one, so two trees can be compared without noise.

    python bench/dispatch_instructions.py [--contacts 4000] [--tree PATH] [--freeze]

Needs valgrind (Debian's package, with its headers) and gcc. Builds a two-function library
that starts and stops Callgrind's count through its client requests, then runs, under
`valgrind --tool=callgrind`, this same script in child mode: seed N contacts due at once
(as bench/dispatch_cpu.py does), count the instructions of one `tick()` alone (null
transport), and print the count per email. `--tree` measures another checkout (an older
commit's worktree); `--freeze` takes what is loaded out of the GC's scans first, as
`nurture run` and `nurture worker` do (it changes memory traffic more than instructions).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

_HELPER = """#include <valgrind/callgrind.h>
void count_start(void) {
    CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT;
}
void count_stop(void) {
    CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS; CALLGRIND_STOP_INSTRUMENTATION;
}
"""


def child(tree: Path, contacts: int, freeze: bool, helper: str) -> None:
    sys.path.insert(0, str(tree))
    from nurture.clock import FixedClock
    from nurture.runtime import open_runtime
    from nurture.seed import copy_project, seed_leads
    from nurture.transport import NullTransport

    counter = ctypes.CDLL(helper)
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 09:00 in Paris
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_project(tree, Path(tmp) / "project")
        rt = open_runtime(root, clock=FixedClock(now), transport=NullTransport())
        seed_leads(rt.database, contacts, now, accounts=contacts, zones=["Europe/Paris"])
        if freeze:
            gc.collect()
            gc.freeze()
        counter.count_start()
        report = rt.dispatcher.tick()
        counter.count_stop()
        rt.database.dispose()
    assert report.sent == contacts, f"expected {contacts} sent, got {report}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=4000)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--freeze", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tree = args.tree.resolve()
    if args.child:
        child(tree, args.contacts, args.freeze, args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        source, helper = Path(tmp) / "count.c", Path(tmp) / "libcount.so"
        source.write_text(_HELPER)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", helper, source], check=True)
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            f"--callgrind-out-file={tmp}/callgrind.out",
            sys.executable,
            __file__,
            "--contacts",
            str(args.contacts),
            "--tree",
            str(tree),
            "--child",
            str(helper),
            *(["--freeze"] if args.freeze else []),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    assert found, done.stderr[-2000:]
    total = int(found.group(1))
    print(
        f"{tree.name}: {args.contacts} due, instructions of tick(): {total:,} "
        f"({total / args.contacts:,.0f} per email){', frozen' if args.freeze else ''}"
    )


if __name__ == "__main__":
    main()
