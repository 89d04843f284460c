"""A stage that writes ``<stage>.count`` numbered files and can be told to die halfway.

``FAIL_<STAGE>_AT=i`` in the environment makes it raise before writing item ``i``;
``SLOW_<STAGE>_S=s`` makes it sleep ``s`` seconds before each item; ``ERRNO_<STAGE>=ENOSPC``
makes writing the first item fail as the operating system would; a negative ``count`` is a
user error. ``attempt.json`` records what the last attempt did.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import time

from src.common.errors import UserError
from src.common.fileio import atomic_write_json, atomic_write_text
from src.common.stage import StageContext


def produce(ctx: StageContext) -> list[str]:
    """Write the items, skipping those a resumed attempt already wrote."""
    count = int(ctx.params.count)
    if count < 0:
        raise UserError(f"{ctx.stage}.count is {count}; set it to 0 or more")
    items = ctx.out_dir / "items"
    if not ctx.resume:
        shutil.rmtree(items, ignore_errors=True)
    items.mkdir(parents=True, exist_ok=True)
    code = os.environ.get(f"ERRNO_{ctx.stage.upper()}")
    if code:
        number = getattr(errno, code)
        raise OSError(number, os.strerror(number), str(items / "0.txt"))
    fail_at = int(os.environ.get(f"FAIL_{ctx.stage.upper()}_AT", "-1"))
    delay = float(os.environ.get(f"SLOW_{ctx.stage.upper()}_S", "0"))
    written = []
    for i in range(count):
        path = items / f"{i}.txt"
        if path.exists():
            continue
        time.sleep(delay)
        if i == fail_at:
            raise RuntimeError(f"injected failure before item {i}")
        atomic_write_text(path, f"{ctx.stage} item {i}\n")
        written.append(i)
    atomic_write_json(
        ctx.out_dir / "attempt.json",
        {"resume": ctx.resume, "written": written, "random": random.random()},
    )
    return ["items", "attempt.json"]
