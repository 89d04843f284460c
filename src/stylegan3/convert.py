"""Convert an official StyleGAN3 or StyleGAN2 network pickle into a toonforge checkpoint, running
none of its code: ``python -m src.stylegan3.convert in=OFFICIAL.pkl out=OURS.ckpt``.

The result loads with ``torch.load(weights_only=True)`` (see :func:`legacy.load_networks`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from src.common.checkpoint import save_checkpoint
from src.common.errors import UserError
from src.common.stage import fail
from src.stylegan3.legacy import load_official_pickle, to_checkpoint

USAGE = "usage: python -m src.stylegan3.convert in=OFFICIAL.pkl out=OURS.ckpt"
KEYS = ("in", "out")


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """``key=value`` arguments; both ``in`` and ``out`` are required, nothing else is allowed."""
    args: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS or not value:
            raise UserError(f"unexpected argument {arg!r}; {USAGE}")
        args[key] = value
    missing = [k for k in KEYS if k not in args]
    if missing:
        raise UserError(f"missing {', '.join(k + '=' for k in missing)}; {USAGE}")
    return args


def convert(source: str | Path, target: str | Path) -> Path:
    """Write the networks of the official pickle ``source`` to our checkpoint ``target``."""
    networks = load_official_pickle(source)
    return save_checkpoint(to_checkpoint(networks, Path(source).name), target)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry: convert, print the written path, or print one error line and exit 2."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        written = convert(args["in"], args["out"])
    except UserError as err:
        fail(str(err))
    else:
        print(f"wrote {written}")


if __name__ == "__main__":
    main()
