"""The layer build (layers/aftercall/build_layer.py, run by `sam build` through the Makefile).

The build itself needs python3.13 and PyPI (bench/footprint.py runs it and checks the result);
here: what it targets, and that leaving out the runtime's packages removes exactly their files.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

LAYER_DIR = Path(__file__).resolve().parents[2] / "layers" / "aftercall"


@pytest.fixture(scope="module")
def build_layer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_layer", LAYER_DIR / "build_layer.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _install(site: Path, dist: str, version: str, files: dict[str, str]) -> None:
    """A distribution as pip --target leaves it: its files, and a dist-info whose RECORD lists them."""
    for relative, text in files.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text(text)
    dist_info = site / f"{dist}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Name: {dist}\nVersion: {version}\n")
    record = [f"{relative},sha256=x,{len(text)}" for relative, text in files.items()]
    record += [f"{dist_info.name}/METADATA,,", f"{dist_info.name}/RECORD,,"]
    (dist_info / "RECORD").write_text("\n".join(record) + "\n")


def test_the_layer_targets_lambda_python313_on_arm64(build_layer: ModuleType) -> None:
    assert build_layer.PLATFORM == "manylinux2014_aarch64"
    assert build_layer.PYTHON_VERSION == "3.13"
    makefile = (LAYER_DIR / "Makefile").read_text(encoding="utf-8")
    assert 'build-AftercallLayer:\n\t$(PYTHON) build_layer.py "$(ARTIFACTS_DIR)"\n' in makefile


def test_only_what_the_runtime_provides_is_left_out(build_layer: ModuleType) -> None:
    # boto3's own closure: never a package the layer's requirements name directly
    runtime = {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six"}
    assert set(build_layer.RUNTIME_PROVIDED) == runtime
    requirements = (LAYER_DIR / "requirements.txt").read_text(encoding="utf-8")
    lines = [line for line in requirements.splitlines() if line and not line.startswith("#")]
    named = {re.split(r"[\[=<>]", line)[0] for line in lines}
    assert named.isdisjoint(build_layer.RUNTIME_PROVIDED)


def test_removing_a_distribution_deletes_its_files_and_nothing_else(build_layer: ModuleType, tmp_path: Path) -> None:
    # Given a site with botocore (a package, and a data directory) next to a package and a module that stay
    _install(tmp_path, "botocore", "1.44.8", {"botocore/__init__.py": "", "botocore/data/endpoints.json": "{}"})
    _install(tmp_path, "python_dateutil", "2.9.0", {"dateutil/__init__.py": "", "dateutil/tz/tz.py": ""})
    _install(tmp_path, "six", "1.17.0", {"six.py": ""})
    _install(tmp_path, "wrapt", "2.5.2", {"wrapt/__init__.py": ""})
    (tmp_path / "typing_extensions.py").write_text("")

    # When the runtime's distributions are removed
    removed = {name: build_layer.remove_distribution(tmp_path, name) for name in ("botocore", "python-dateutil", "six")}

    # Then their files, directories and dist-info are gone; the rest is untouched
    assert removed == {"botocore": True, "python-dateutil": True, "six": True}
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == [
        "typing_extensions.py",
        "wrapt",
        "wrapt-2.5.2.dist-info",
        "wrapt-2.5.2.dist-info/METADATA",
        "wrapt-2.5.2.dist-info/RECORD",
        "wrapt/__init__.py",
    ]
    # and a distribution that is not installed is simply not there
    assert build_layer.remove_distribution(tmp_path, "s3transfer") is False
