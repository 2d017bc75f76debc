"""CPU per email of `Dispatcher.tick()` alone: a figure that two trees can be compared on.

    python bench/dispatch_cpu.py [--contacts 4000] [--rounds 3] [--tree PATH] [--profile FILE]

Seeds N contacts due at once on a fresh SQLite file in a copy of the tree's example project
(the same seeding as bench/dispatch.py), then measures `time.process_time()` around one
`tick()` with a null transport, and prints min/median/max over the rounds in microseconds
of CPU per email. Process time, not wall time: the machine is shared.

`--tree PATH` imports nurture from, and copies the example project of, another checkout of
the project (for instance an older commit's worktree) so both are measured by the same
script; this script only uses what both have (open_runtime, seed_leads, copy_project).
`--profile FILE` writes a cProfile of the last round's tick.

Before the tick, the process is readied as `nurture run` and `nurture worker` ready theirs
(`nurture.runtime.freeze_loaded`: what is loaded leaves the garbage collector's scans), when
the tree has that; `--freeze` does the same (`gc.freeze()`) for a tree without it, so two
trees are compared on their code alone.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() for any tree")
    args = parser.parse_args()
    tree = args.tree.resolve()
    sys.path.insert(0, str(tree))

    import nurture
    from nurture import runtime as runtime_module
    from nurture.clock import FixedClock
    from nurture.runtime import open_runtime
    from nurture.seed import copy_project, seed_leads
    from nurture.transport import NullTransport

    assert Path(nurture.__file__).resolve().is_relative_to(tree), nurture.__file__
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 09:00 in Paris
    figures: list[float] = []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            root = copy_project(tree, Path(tmp) / "project")
            rt = open_runtime(root, clock=FixedClock(now), transport=NullTransport())
            seed_leads(
                rt.database, args.contacts, now, accounts=args.contacts, zones=["Europe/Paris"]
            )
            ready = getattr(runtime_module, "freeze_loaded", None)
            if ready is not None:
                ready()
            elif args.freeze:
                gc.collect()
                gc.freeze()
            profiler = None
            if args.profile and round_ == args.rounds - 1:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            started = time.process_time()
            report = rt.dispatcher.tick()
            spent = time.process_time() - started
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(str(args.profile))
            rt.database.dispose()
        assert report.sent == args.contacts, f"expected {args.contacts} sent, got {report}"
        figures.append(spent / args.contacts * 1e6)
        gc.unfreeze()
    print(
        f"{tree.name}: {args.contacts} due, CPU per email of tick(): "
        f"min {min(figures):.0f} / median {statistics.median(figures):.0f} / "
        f"max {max(figures):.0f} us  (rounds: {', '.join(f'{f:.0f}' for f in figures)})"
    )


if __name__ == "__main__":
    main()
