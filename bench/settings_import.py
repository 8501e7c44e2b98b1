"""Benchmark: what ``aftercall/settings.py`` adds to every cold start, side by side in one run.

The settings module is imported by every function before its first invocation. This runs the
module's body (compiled once, as a ``.pyc`` would be) in a fresh module object, again and again,
with what it imports already loaded, so only the module's own work is timed: defining its classes
and functions. Variants, alternating:

* ``ours``: ``layers/aftercall/aftercall/settings.py`` as it is;
* ``pydantic``: the same module with the settings classes as pydantic ``BaseModel``\\ s (what
  pydantic-settings would build at import);
* ``frozen``: the same module with ``@dataclass(frozen=True)`` (``__eq__``, ``__repr__`` and the
  frozen ``__setattr__`` generated);
* ``before`` (``--compare DIR``): ``DIR/layers/aftercall/aftercall/settings.py``, e.g. an older
  commit unpacked with ``git archive <commit> layers | tar -x -C DIR``.

Medians and minimums are printed with the ratio to ``ours``; nothing is asserted.

    python bench/settings_import.py [--runs 300] [--compare DIR] [--json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "layers" / "aftercall" / "aftercall" / "settings.py"
PLAIN = "@dataclass(eq=False, repr=False)\n"


def variants(compare: Path | None) -> dict[str, str]:
    ours = SETTINGS.read_text(encoding="utf-8")
    if PLAIN not in ours:
        raise SystemExit(f"{SETTINGS} has no {PLAIN.strip()}: update the variants here")
    pydantic = ours.replace(
        "from dataclasses import dataclass\n", "from dataclasses import dataclass\n\nimport pydantic\n"
    )
    for name in ("EndHandlerSettings", "IngestSettings", "FollowUpSettings"):
        pydantic = pydantic.replace(f"{PLAIN}class {name}:", f"class {name}(pydantic.BaseModel):")
    found = {"ours": ours, "pydantic": pydantic, "frozen": ours.replace(PLAIN, "@dataclass(frozen=True)\n")}
    if compare is not None:
        found["before"] = (compare / "layers" / "aftercall" / "aftercall" / "settings.py").read_text(encoding="utf-8")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--compare", type=Path, help="a tree whose settings.py to time as 'before'")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(SETTINGS.parents[1]))
    for loaded_first in ("aftercall.errors", "aftercall.phones", "pydantic"):  # what the variants import
        importlib.import_module(loaded_first)

    codes = {name: compile(source, f"<{name}>", "exec") for name, source in variants(args.compare).items()}
    seconds: dict[str, list[float]] = {name: [] for name in codes}
    for run in range(args.runs + 1):
        for name, code in codes.items():
            module = types.ModuleType(f"aftercall.settings_bench_{name}")
            sys.modules[module.__name__] = module  # dataclasses and pydantic look their module up
            start = time.perf_counter()
            exec(code, module.__dict__)  # noqa: S102 - our own module's source
            if run:  # the first round warms up
                seconds[name].append(time.perf_counter() - start)
    ours = statistics.median(seconds["ours"])
    result: dict[str, Any] = {
        name: {
            "median_ms": round(statistics.median(values) * 1000, 3),
            "min_ms": round(min(values) * 1000, 3),
            "ratio_to_ours": round(statistics.median(values) / ours, 2),
        }
        for name, values in seconds.items()
    }
    if args.json:
        print(json.dumps({"runs": args.runs, "variants": result}))
        return 0
    print(f"settings.py module body, {args.runs} runs each (median / min, ratio of medians to ours)")
    for name, figures in result.items():
        print(
            f"  {name:9} {figures['median_ms']:7.3f} ms / {figures['min_ms']:7.3f} ms  {figures['ratio_to_ours']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
