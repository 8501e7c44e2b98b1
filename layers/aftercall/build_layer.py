"""Build the aftercall layer for Lambda (python3.13, arm64): what ``sam build`` runs, via the Makefile.

    python3.13 build_layer.py ARTIFACTS_DIR

1. ``pip install -r requirements.txt`` for Lambda's platform (manylinux2014_aarch64, CPython 3.13,
   wheels only: no Docker, no compiler) into ``ARTIFACTS_DIR/python``;
2. remove what the python3.13 runtime already provides (:data:`RUNTIME_PROVIDED`): aws-xray-sdk,
   which Powertools' Tracer needs, requires botocore, so pip installs a second botocore (with
   jmespath, python-dateutil and six: 30 of the layer's 47 MB). On Lambda ``/opt/python`` comes
   before the runtime's packages, so it would pair the runtime's boto3 with a botocore it was not
   released with, and be compiled from source at every cold start;
3. copy the ``aftercall`` package;
4. compile every module to ``.pyc`` with ``--invalidation-mode unchecked-hash``. ``/opt`` is read-only
   on Lambda, so without them Python compiles every module it imports again at every cold start;
   hash-based files stay valid whatever times the files get when Lambda unpacks the layer.

Why not ``BuildMethod: python3.13``: its builder can neither leave out a dependency of a dependency
nor ship bytecode. bench/coldstart.py and bench/footprint.py measure what both cost
(docs/performance.md).
"""

from __future__ import annotations

import compileall
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLATFORM = "manylinux2014_aarch64"
PYTHON_VERSION = "3.13"
#: Distributions the Lambda python3.13 runtime ships (boto3 and its dependencies), left out of the layer.
#: urllib3 stays: requests needs it, and the layer's copy is the version the tests run against.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six")


def _normalise(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def remove_distribution(site: Path, name: str) -> bool:
    """Delete an installed distribution's files (as listed in its RECORD); False if it is not there."""
    records = [d for d in site.glob("*.dist-info") if _normalise(d.name.split("-", 1)[0]) == _normalise(name)]
    for dist_info in records:
        for line in (dist_info / "RECORD").read_text(encoding="utf-8").splitlines():
            relative = line.rsplit(",", 2)[0]
            path = (site / relative).resolve()
            if path.is_relative_to(site.resolve()) and path.is_file():
                path.unlink()
        shutil.rmtree(dist_info, ignore_errors=True)
    for directory in sorted(site.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()  # package directories the RECORD emptied
    return bool(records)


def build(artifacts_dir: Path) -> Path:
    if sys.version_info[:2] != (3, 13):
        raise SystemExit(f"build the layer with Python {PYTHON_VERSION} (its .pyc files are version-specific)")
    site = artifacts_dir / "python"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    subprocess.run(  # noqa: S603 - pip, as sam's own builder runs it
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            "--no-compile",
            "--target",
            str(site),
            "--platform",
            PLATFORM,
            "--implementation",
            "cp",
            "--python-version",
            PYTHON_VERSION,
            "--only-binary=:all:",
            "-r",
            str(HERE / "requirements.txt"),
        ],
        check=True,
    )
    for name in RUNTIME_PROVIDED:
        remove_distribution(site, name)
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts: nothing imports them
    for stubs in site.glob("*-stubs"):  # type stubs (wrapt's): for type checkers, never imported
        shutil.rmtree(stubs)
    shutil.copytree(HERE / "aftercall", site / "aftercall", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if not compileall.compile_dir(
        site,
        quiet=1,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    ):
        raise SystemExit("compileall failed")
    return site


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python3.13 build_layer.py ARTIFACTS_DIR")
    print(f"built {build(Path(sys.argv[1]))}")
