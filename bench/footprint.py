"""Benchmark: the built layer's footprint, and whether it carries anything the functions never import.

Builds the layer the way ``sam build`` does (``make build-AftercallLayer`` in layers/aftercall with
``ARTIFACTS_DIR`` set; needs python3.13 on PATH and PyPI), or reads a build given by
``--build-dir`` (a ``sam build`` directory, its ``AftercallLayer`` directory, or a directory holding
``python/``). Reports the layer's zipped size (deflate, as ``sam package`` zips it) and unzipped
size, the largest top-level packages, how much is bytecode and metadata.

Then checks what the functions import. Every function of template.yaml that uses the layer is
started as a fresh process (``bench/_lambda_child.py``) on the local stack (moto server and fake
HubSpot on loopback): the EndHandler processes one event, the others are imported. The layer is
built for Linux arm64 while this may be another machine, so the children import the same pinned
versions from the dev environment and their ``sys.modules`` are matched to the layer's top-level
entries by name. An entry nobody imported is listed under ``unused`` with its size and, if an
imported distribution requires it (a lazy import, such as requests' idna), the name of that one;
``removable`` are the unused entries no imported distribution requires.

    python bench/footprint.py [--build-dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from _lambda_stack import LAYER_DIR, REPO, BenchStack, machine, run_child, site_dirs, support_events, write_events
from packaging.requirements import Requirement

from aftercall_ops.emulator.template import load_template

MB = 1024 * 1024


def find_site(build_dir: Path) -> Path:
    for candidate in (build_dir / "AftercallLayer" / "python", build_dir / "python", build_dir):
        if (candidate / "aftercall").is_dir():
            return candidate
    raise SystemExit(f"{build_dir} holds no built layer (no python/aftercall/ under it)")


def build_layer(artifacts: Path) -> Path:
    """``make build-AftercallLayer`` as sam runs it; a clear error when python3.13 or make is missing."""
    make = shutil.which("make")
    if make is None:
        raise SystemExit("building the layer needs make; or pass --build-dir of an existing build")
    python = os.environ.get("PYTHON", "python3.13")
    if shutil.which(python) is None:
        raise SystemExit(f"building the layer needs {python} on PATH (try PYENV_VERSION=3.13.0), or pass --build-dir")
    completed = subprocess.run(  # noqa: S603 - make on our own Makefile
        [make, "--no-print-directory", "-C", str(LAYER_DIR), "build-AftercallLayer", f"ARTIFACTS_DIR={artifacts}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,  # pip downloads included; a stuck build must not hang the benchmark
    )
    if completed.returncode != 0:
        raise SystemExit(f"the layer build failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    return artifacts / "python"


def files(site: Path) -> Iterator[Path]:
    for root, _, names in os.walk(site):
        for name in names:
            yield Path(root) / name


def zipped_size(site: Path) -> int:
    """The layer as ``sam package`` uploads it: python/... in a deflated zip."""
    with tempfile.TemporaryFile() as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(files(site)):
                archive.write(path, Path("python") / path.relative_to(site))
        return handle.tell()


def top_level(site: Path, path: Path) -> str:
    first = path.relative_to(site).parts[0]
    if first == "__pycache__":  # a top-level module's bytecode belongs to the module
        return path.name.split(".", 1)[0]
    return first.removesuffix(".py")


def owners(site: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Top-level entry → distribution, and distribution → the distributions it requires (from dist-info)."""
    owner: dict[str, str] = {}
    requires: dict[str, list[str]] = {}
    for dist_info in site.glob("*.dist-info"):
        name = canonical(dist_info.name.split("-", 1)[0])
        for line in (dist_info / "RECORD").read_text(encoding="utf-8").splitlines():
            first = line.rsplit(",", 2)[0].split("/", 1)[0]
            if first and not first.endswith((".dist-info", ".data")) and first not in ("..", "__pycache__"):
                owner.setdefault(first.removesuffix(".py"), name)
        needs = []
        for line in (dist_info / "METADATA").read_text(encoding="utf-8").splitlines():
            if line.startswith("Requires-Dist:"):
                requirement = Requirement(line.split(":", 1)[1].strip())
                # the extras requirements.txt asks for (powertools[tracer,parser]) count as required
                marker = requirement.marker
                if marker is None or any(marker.evaluate({"extra": e}) for e in ("", "tracer", "parser")):
                    needs.append(canonical(requirement.name))
        requires[name] = needs
    return owner, requires


def module_name(relative: Path) -> str:
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def layer_functions() -> list[tuple[str, Path, str]]:
    """(logical id, code dir, handler) of every function that uses the layer."""
    found = []
    for logical_id, resource in load_template()["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function" and {"Ref": "AftercallLayer"} in props.get("Layers", []):
            found.append((logical_id, REPO / props["CodeUri"], str(props["Handler"])))
    return found


def imported_modules(tmp: Path) -> dict[str, dict[str, str | None]]:
    """Per function: every module in ``sys.modules`` after the EndHandler processed one event / the others loaded."""
    modules: dict[str, dict[str, str | None]] = {}
    with BenchStack() as stack:
        env = stack.lambda_env()
        for logical_id, code_dir, handler in layer_functions():
            events = [support_events(1, seed=11)[0]] if logical_id == "EndHandler" else []
            events_file = write_events(tmp / f"{logical_id}.jsonl", events)
            run = run_child(
                handler,
                [str(code_dir), str(LAYER_DIR), *site_dirs()],
                events_file,
                {**env, "LAMBDA_TASK_ROOT": str(code_dir), "_HANDLER": handler},
                extra=["--modules"],
                function_timeout_s=stack.timeout_s,
            )
            if events and run.report["statuses"] != {"processed": 1}:
                raise RuntimeError(f"{logical_id} did not process its event: {run.report['errors']}")
            modules[logical_id] = run.report["modules"]
    return modules


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--build-dir", type=Path, help="an existing build (sam build dir, or a dir with python/)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--top", type=int, default=12, help="how many of the largest packages to list")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aftercall-footprint-") as tmp_name:
        tmp = Path(tmp_name)
        site = find_site(args.build_dir) if args.build_dir else build_layer(tmp / "artifacts")
        sizes: dict[str, int] = {}
        pyc = dist_info = 0
        for path in files(site):
            size = path.stat().st_size
            sizes[top_level(site, path)] = sizes.get(top_level(site, path), 0) + size
            pyc += size if path.suffix == ".pyc" else 0
            dist_info += size if ".dist-info" in path.relative_to(site).parts[0] else 0
        unzipped = sum(sizes.values())
        zipped = zipped_size(site)
        owner, requires = owners(site)
        importable = {e for e in sizes if (site / f"{e}.py").is_file() or any((site / e).rglob("*.py"))}
        aftercall_modules = {module_name(path.relative_to(site)) for path in (site / "aftercall").rglob("*.py")}
        per_function = imported_modules(tmp)

    imported_tops = {name.split(".")[0] for modules in per_function.values() for name in modules}
    imported_dists = {owner[top] for top in imported_tops if top in owner}
    required_by: dict[str, list[str]] = {}
    for dist in sorted(imported_dists):
        for needed in requires.get(dist, []):
            required_by.setdefault(needed, []).append(dist)
    unused = []
    for entry, size in sorted(sizes.items(), key=lambda item: -item[1]):
        if entry.endswith((".dist-info", ".data")) or entry in imported_tops:
            continue
        dist = owner.get(entry, "")
        reason = (
            "not importable (type stubs or data)"
            if entry not in importable
            else f"lazy dependency of {', '.join(required_by[dist])}"
            if dist in required_by
            else "required by nothing imported"
        )
        unused.append(
            {
                "entry": entry,
                "mb": round(size / MB, 3),
                "distribution": dist,
                "reason": reason,
                "removable": entry not in importable or dist not in required_by,
            }
        )
    not_loaded = sorted(aftercall_modules - set(per_function.get("EndHandler", {})))
    packages = [
        {"package": entry, "mb": round(size / MB, 2)}
        for entry, size in sorted(sizes.items(), key=lambda item: -item[1])
        if not entry.endswith((".dist-info", ".data"))
    ][: args.top]
    output: dict[str, Any] = {
        "benchmark": "footprint",
        "site": str(site) if args.build_dir else "(built in a temporary directory, removed)",
        "zipped_mb": round(zipped / MB, 2),
        "unzipped_mb": round(unzipped / MB, 2),
        "bytecode_mb": round(pyc / MB, 2),
        "dist_info_mb": round(dist_info / MB, 2),
        "largest_packages": packages,
        "functions_checked": sorted(per_function),
        "unused": unused,
        "removable": [u["entry"] for u in unused if u["removable"]],
        "runtime_provided_in_layer": sorted(
            d
            for d in set(owner.values())
            if d in {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six"}
        ),
        "aftercall_modules_not_loaded_by_end_handler": not_loaded,
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(output))
        return 0
    print(
        f"layer: {output['zipped_mb']} MB zipped, {output['unzipped_mb']} MB unzipped "
        f"({output['bytecode_mb']} MB of it .pyc, {output['dist_info_mb']} MB dist-info)"
    )
    print("largest packages (unzipped):")
    for row in packages:
        print(f"  {row['package']:<28} {row['mb']:7.2f} MB")
    print(f"imported by {', '.join(output['functions_checked'])}: checked against sys.modules")
    if output["runtime_provided_in_layer"]:
        print(f"provided by the Lambda runtime but in the layer: {', '.join(output['runtime_provided_in_layer'])}")
    if not unused:
        print("unused: nothing — every top-level package in the layer is imported")
    for row in unused:
        verdict = "removable" if row["removable"] else "kept"
        print(f"unused: {row['entry']:<24} {row['mb']:7.3f} MB  {row['reason']} - {verdict}")
    print("aftercall modules the EndHandler did not load (other functions' code, adapters chosen by configuration):")
    print(f"  {', '.join(not_loaded) or 'none'}")
    m = output["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
