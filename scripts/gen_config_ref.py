"""Write docs/config.md, the reference of every option of ``trisa-peer`` and ``sectigo``.

Walks every parser of both CLIs (:mod:`trisa_peer.cli.introspect`): per command, each
option's flag (hidden old spellings noted), environment variable, TOML key, default and
help text. ``tests/test_config_reference.py`` fails when the file and the parsers
disagree, so after adding or changing a flag run ``make config-ref`` and commit the file.

Usage::

    python scripts/gen_config_ref.py          # write docs/config.md
    python scripts/gen_config_ref.py --check  # exit 1 if docs/config.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trisa_peer.cli.introspect import reference_text

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the file instead of writing it")
    parser.add_argument("--file", type=Path, default=REFERENCE,
                        help="the reference to write or check (default docs/config.md)")
    args = parser.parse_args(argv)
    text = reference_text()
    if args.check:
        current = args.file.read_text() if args.file.is_file() else ""
        if current != text:
            print(f"{args.file}: out of date; run 'make config-ref'", file=sys.stderr)
            return 1
        return 0
    args.file.write_text(text)
    print(f"wrote {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
