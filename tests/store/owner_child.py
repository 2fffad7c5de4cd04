"""A child process for the ownership tests: `python owner_child.py URL NAME`, then one command a line on stdin.

    take RUN_ID [DIR N]   (with DIR N: first wait until N processes have arrived in DIR, a barrier) then
                  own the run (held until `drop`); prints {"won": true, "pid": …} or {"won": false, "error": …}
    drop          let every run go; prints {"dropped": n}
    exit          close the store and exit
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from orchestrator.errors import RunBusy
from orchestrator.store.repo import Store


def meet(folder: str, n: int) -> None:
    """Arrive, then spin until all n have: they all go within microseconds of each other."""
    open(os.path.join(folder, str(os.getpid())), "w").close()
    while len(os.listdir(folder)) < n:
        pass


def main() -> None:
    url, name = sys.argv[1], sys.argv[2]
    store = Store(url)
    held = contextlib.ExitStack()
    count = 0
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "take":
            arg, *barrier = arg.split(" ")
            if barrier:
                meet(barrier[0], int(barrier[1]))
            try:
                held.enter_context(store.own_run(arg, f"{name}:{os.getpid()}", command=f"test {name}"))
                count += 1
                print(json.dumps({"won": True, "pid": os.getpid()}), flush=True)
            except RunBusy as exc:
                print(json.dumps({"won": False, "error": str(exc), "exit_code": exc.exit_code}), flush=True)
        elif cmd == "drop":
            held.close()
            held = contextlib.ExitStack()
            print(json.dumps({"dropped": count}), flush=True)
            count = 0
        elif cmd == "exit":
            break
    held.close()
    store.close()


if __name__ == "__main__":
    main()
