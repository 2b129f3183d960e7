"""trisa-peer reliability suite (issue 11): ``make soak`` or ``.venv/bin/python soak/run.py``.

Each ``soak/case_*.py`` is one hostile-peer or fault scenario against real servers on
loopback (127.0.0.1 only), bounded in count and time. A case module defines

    NAME: str                     # short id, e.g. "undecodable"
    def run(scale: float) -> Result

where ``scale`` 1.0 is the full figure the README reports and the test suite runs the
same assertions at a small scale (``tests/test_soak.py``). Each case runs in its own
process here, so that one case's memory or threads never colour the next one's figures.

Prints one table, writes ``soak/results.json`` and exits 1 if any target is missed.
Options: ``--scale F`` (default 1.0), ``--only a,b``, ``--out FILE``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def cases() -> list[Path]:
    return sorted(HERE.glob("case_*.py"))


def load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    return module


def _one(path: Path, scale: float) -> None:
    """Child process: run one case, print its result as one JSON line."""
    module = load(path)
    result = module.run(scale)
    print("SOAK-RESULT " + json.dumps(result.as_dict()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", default="")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _one(Path(args.child), args.scale)
        return 0
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    results: list[dict[str, Any]] = []
    for path in cases():
        name = path.stem.removeprefix("case_")
        if only and name not in only:
            continue
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(path), "--scale", str(args.scale)],
            capture_output=True, text=True, check=False, timeout=900,
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("SOAK-RESULT ")), "")
        if not line:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            result = {"name": name, "ok": False, "figures": {}, "misses": [
                f"case crashed (exit {proc.returncode}): {' | '.join(tail)}"]}
        else:
            result = json.loads(line.removeprefix("SOAK-RESULT "))
        result["seconds"] = round(time.monotonic() - started, 1)
        results.append(result)
        status = "ok  " if result["ok"] else "MISS"
        figures = ", ".join(f"{k}={v}" for k, v in result["figures"].items())
        print(f"{status} {name:<22} {result['seconds']:>6.1f}s  {figures}", flush=True)
        for miss in result.get("misses", []):
            print(f"     miss: {miss}", flush=True)
    Path(args.out).write_text(json.dumps({"scale": args.scale, "cases": results}, indent=2))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
