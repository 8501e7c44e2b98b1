"""The rules of the house (docs/architecture.md#rules-of-the-house), checked on the source with ``ast``.

Nothing is imported: each module is parsed, and every import and call is resolved to the dotted
name it binds (``import boto3 as b`` then ``b.client(...)`` is ``boto3.client``). Each rule is also
run against a small source that breaks it, so a check that could never fail is caught here too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "aftercall" / "aftercall"
FUNCTIONS = ROOT / "functions"
OPS = ROOT / "ops" / "aftercall_ops"

#: What the layer (it runs in Lambda) must never import: operator tooling, tests, benchmarks.
NOT_IN_THE_LAYER = ("aftercall_ops", "tests", "bench")
#: The ways to make a boto3 client or session; only aftercall/aws.py does.
BOTO3_FACTORIES = frozenset({"boto3.client", "boto3.resource", "boto3.Session", "boto3.session.Session"})
#: HTTP client libraries; only aftercall/crm/http.py imports them.
HTTP_LIBRARIES = ("requests", "urllib3", "http.client", "urllib.request", "httpx", "aiohttp")
#: The calls that build a transport or send a request with ``requests``: only crm/http.py makes them.
REQUESTS_SENDERS = frozenset(
    {f"requests.{verb}" for verb in ("get", "post", "put", "patch", "delete", "head", "options", "request")}
    | {"requests.Session", "requests.session", "requests.sessions.Session", "requests.adapters.HTTPAdapter"}
)
#: Thin entry points: wiring and one call; anything longer belongs in the layer.
MAX_ENTRY_POINT_LINES = 80
#: The ways to read (or change) the process environment; only aftercall/settings.py uses them.
ENVIRONMENT_READERS = frozenset({"os.environ", "os.getenv", "os.environb", "os.putenv", "os.unsetenv"})
#: Small modules and classes in the layer and ops/ (docs/architecture.md#rules-of-the-house).
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
#: Where class names must be unique: everything that is code, not only the layer.
CODE_ROOTS = ("layers/aftercall/aftercall", "functions", "ops/aftercall_ops", "tests", "bench")
#: Class names that are still reused today, each with where and why it is left for now.
REUSED_CLASS_NAMES = {
    "Handler": "tests/support/ops.py: two request handlers local to two functions",
}

#: What the emulator (it hosts the operations, as Lambda hosts our code) must never import.
NOT_IN_THE_EMULATOR = ("aftercall_ops.operations", "aftercall_ops.cli")
#: What the fakes (stand-ins for vendors' APIs) must never import: nothing of ours but other fakes.
NOT_IN_THE_FAKES = ("aftercall_ops.emulator", "aftercall_ops.operations", "aftercall_ops.cli", "aftercall_ops.generate")
#: Options and printing: only cli/ uses them.
CLI_LIBRARIES = ("typer", "rich")
#: Modules (or classes in them) over the limits today, each with its reason; issue 10 splits the fakes.
SIZE_EXCEPTIONS = {
    "fakes/http.py": "the fakes' shared server, being split by issue 10",
    "fakes/hubspot.py": "being split by issue 10",
    "fakes/salesforce.py": "being split by issue 10",
    "fakes/zendesk.py": "FakeZendesk, being split by issue 10",
}

#: Exceptions that exist today, each with its reason. ``testing/`` is the offline kit for the
#: user's own tests and ``aftercall try``: it is never imported by the runtime (a rule below).
BOTO3_EXCEPTIONS = {
    "aws.py": "the seam itself",
    "testing/recording_aws.py": "RecordingAws: real boto3 clients with dummy credentials whose requests are answered "
    "in-process by a botocore before-call hook; nothing is sent",
}
HTTP_IMPORT_EXCEPTIONS = {
    "crm/http.py": "the seam itself",
    "crm/hubspot.py": "types only: its rate-limit hooks receive the requests.Response crm/http.py got",
    "crm/salesforce.py": "types only: its rate-limit hook receives the requests.Response crm/http.py got",
    "testing/recording_crm.py": "RecordingCrm: a requests transport adapter that answers in-process; nothing is sent",
}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _matches(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _imported(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Every absolute module (or module.name) an import statement names, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def _bindings(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name an import bound to it."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    bound[top] = top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _calls(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Every call whose callee resolves, through the imports, to a dotted name."""
    bound = _bindings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name is None:
                continue
            head, _, rest = name.partition(".")
            if head in bound:
                yield (f"{bound[head]}.{rest}" if rest else bound[head]), node.lineno


def forbidden_imports(source: str, path: str, prefixes: Iterable[str]) -> list[Violation]:
    prefixes = tuple(prefixes)
    found: dict[int, Violation] = {}  # one per line: `from a import b` names both a and a.b
    for name, line in _imported(ast.parse(source, path)):
        if _matches(name, prefixes) and line not in found:
            found[line] = Violation(path, line, f"imports {name}")
    return list(found.values())


def boto3_factories(source: str, path: str) -> list[Violation]:
    return [
        Violation(path, line, f"calls {name} (make clients with aftercall.aws.client)")
        for name, line in _calls(ast.parse(source, path))
        if name in BOTO3_FACTORIES
    ]


def requests_senders(source: str, path: str) -> list[Violation]:
    return [
        Violation(path, line, f"calls {name} (send through aftercall.crm.http.CrmHttpClient)")
        for name, line in _calls(ast.parse(source, path))
        if name in REQUESTS_SENDERS
    ]


def thick_entry_point(source: str, path: str) -> list[Violation]:
    tree = ast.parse(source, path)
    found = [
        Violation(path, node.lineno, f"defines class {node.name} (logic belongs in the layer)")
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    ]
    lines = len(source.splitlines())
    if lines > MAX_ENTRY_POINT_LINES:
        found.append(
            Violation(path, lines, f"{lines} lines, over {MAX_ENTRY_POINT_LINES} (logic belongs in the layer)")
        )
    return found


def environment_reads(source: str, path: str) -> list[Violation]:
    """Every use of ``os.environ``/``os.getenv``... (called or not), however ``os`` was imported."""
    tree = ast.parse(source, path)
    bound = _bindings(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Name | ast.Attribute) or not isinstance(getattr(node, "ctx", None), ast.Load):
            continue
        name = _dotted(node)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        if head in bound and (f"{bound[head]}.{rest}" if rest else bound[head]) in ENVIRONMENT_READERS:
            found.append(
                Violation(
                    path, node.lineno, f"reads {bound[head]}{'.' + rest if rest else ''} (use aftercall.settings)"
                )
            )
    return found


def oversized(source: str, path: str) -> list[Violation]:
    tree = ast.parse(source, path)
    found = [
        Violation(path, node.lineno, f"class {node.name} is {size} lines, over {MAX_CLASS_LINES}")
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and (size := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_CLASS_LINES
    ]
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(Violation(path, lines, f"{lines} lines, over {MAX_MODULE_LINES}"))
    return found


def class_names(sources: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Class name -> every ``path:line`` defining it."""
    defined: dict[str, list[str]] = {}
    for path, source in sources:
        for node in ast.walk(ast.parse(source, path)):
            if isinstance(node, ast.ClassDef):
                defined.setdefault(node.name, []).append(f"{path}:{node.lineno}")
    return defined


def _code_modules() -> list[tuple[str, str]]:
    return [
        (p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8"))
        for root in CODE_ROOTS
        for p in sorted((ROOT / root).rglob("*.py"))
    ]


def _layer_modules() -> list[tuple[str, str]]:
    return [
        (path.relative_to(LAYER).as_posix(), path.read_text(encoding="utf-8")) for path in sorted(LAYER.rglob("*.py"))
    ]


def _function_modules() -> list[tuple[str, str]]:
    return [(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8")) for p in sorted(FUNCTIONS.rglob("*.py"))]


def _ops_modules(folder: str = "") -> list[tuple[str, str]]:
    """ops/aftercall_ops modules (those under ``folder``), by path relative to the package."""
    return [
        (path.relative_to(OPS).as_posix(), path.read_text(encoding="utf-8"))
        for path in sorted((OPS / folder).rglob("*.py"))
    ]


def _report(violations: list[Violation]) -> str:
    return "\n".join(str(v) for v in violations)


# -- the rules, on the tree as it is ------------------------------------------------------------


def test_what_runs_in_lambda_never_imports_operator_tooling_tests_or_benchmarks() -> None:
    # Given every module of the runtime layer and of the functions
    modules = _layer_modules()
    assert len(modules) > 30, "the layer's modules were not found"
    modules += _function_modules()
    # When their imports are read
    violations = [v for rel, src in modules for v in forbidden_imports(src, rel, NOT_IN_THE_LAYER)]
    # Then none reaches aftercall_ops, tests or bench
    assert not violations, _report(violations)


def test_only_aws_py_makes_boto3_clients() -> None:
    # Given every module of the layer but the listed exceptions
    modules = [(rel, src) for rel, src in _layer_modules() if rel not in BOTO3_EXCEPTIONS]
    # When their calls are resolved
    violations = [v for rel, src in modules for v in boto3_factories(src, rel)]
    # Then none makes a boto3 client, resource or session: they ask aftercall.aws for one
    assert not violations, _report(violations)


def test_the_boto3_exceptions_still_exist() -> None:
    # Given the listed exceptions (an exception nobody needs any more is a hole left open)
    sources = dict(_layer_modules())
    # When each is checked, Then each still makes a boto3 client (or the entry is removed)
    for rel in BOTO3_EXCEPTIONS:
        assert boto3_factories(sources[rel], rel), f"{rel} no longer makes boto3 clients: drop its exception"


def test_only_crm_http_py_imports_an_http_client_library() -> None:
    # Given every module of the layer but the listed exceptions
    modules = [(rel, src) for rel, src in _layer_modules() if rel not in HTTP_IMPORT_EXCEPTIONS]
    # When their imports are read
    violations = [v for rel, src in modules for v in forbidden_imports(src, rel, HTTP_LIBRARIES)]
    # Then none imports requests, urllib3, http.client, urllib.request, httpx or aiohttp
    assert not violations, _report(violations)


def test_the_http_import_exceptions_still_exist() -> None:
    # Given the listed exceptions
    sources = dict(_layer_modules())
    # When each is checked, Then each still imports an HTTP library (or the entry is removed)
    for rel in HTTP_IMPORT_EXCEPTIONS:
        assert forbidden_imports(sources[rel], rel, HTTP_LIBRARIES), f"{rel} imports no HTTP library: drop it"


def test_no_module_but_crm_http_py_sends_with_requests() -> None:
    # Given every module of the layer but the seam, the type-only importers included
    modules = [(rel, src) for rel, src in _layer_modules() if rel != "crm/http.py"]
    # When their calls are resolved
    violations = [v for rel, src in modules for v in requests_senders(src, rel)]
    # Then none builds a requests session or adapter, or sends a request
    assert not violations, _report(violations)


def test_the_runtime_never_imports_the_offline_testing_kit() -> None:
    # Given the layer's modules (but the kit itself) and the Lambda entry points
    modules = [(rel, src) for rel, src in _layer_modules() if not rel.startswith("testing/")]
    modules += _function_modules()
    # When their imports are read
    violations = [v for rel, src in modules for v in forbidden_imports(src, rel, ("aftercall.testing",))]
    # Then none imports aftercall.testing: its exceptions to the rules above never run in Lambda
    assert not violations, _report(violations)


def test_lambda_entry_points_stay_thin() -> None:
    # Given each function's entry point
    entry_points = sorted(FUNCTIONS.glob("*/app.py"))
    assert len(entry_points) >= 3, "the entry points were not found"
    # When each is read
    violations = [
        v
        for p in entry_points
        for v in thick_entry_point(p.read_text(encoding="utf-8"), p.relative_to(ROOT).as_posix())
    ]
    # Then each is short and defines no class
    assert not violations, _report(violations)


def test_only_settings_py_reads_the_environment() -> None:
    # Given every module of the layer but settings.py, and the Lambda entry points
    modules = [(rel, src) for rel, src in _layer_modules() if rel != "settings.py"]
    modules += _function_modules()
    # When their names are resolved through their imports
    violations = [v for rel, src in modules for v in environment_reads(src, rel)]
    # Then none reads os.environ or os.getenv: configuration has one typed reader, with one error shape
    assert not violations, _report(violations)
    assert environment_reads(dict(_layer_modules())["settings.py"], "settings.py"), "settings.py no longer reads it"


def test_layer_modules_and_classes_stay_small() -> None:
    # Given every module of the layer
    modules = _layer_modules()
    # When their lengths and their classes' lengths are measured
    violations = [v for rel, src in modules for v in oversized(src, rel)]
    # Then none is over 500 lines, and no class over 300
    assert not violations, _report(violations)


def test_every_class_name_is_unique_across_the_code() -> None:
    # Given every class the layer, the functions, ops, tests and bench define
    defined = class_names(_code_modules())
    # When names defined more than once are collected
    reused = {name: places for name, places in defined.items() if len(places) > 1}
    # Then there are none but the listed ones, and each listed one is still reused (or its entry goes)
    unexpected = {name: places for name, places in reused.items() if name not in REUSED_CLASS_NAMES}
    assert not unexpected, unexpected
    stale = sorted(set(REUSED_CLASS_NAMES) - set(reused))
    assert not stale, f"no longer reused, drop from REUSED_CLASS_NAMES: {stale}"


# -- each check can fail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import aftercall_ops.emit\n",
        "from aftercall_ops import replay\n",
        "from tests.support.events import ended_event\n",
        "import bench.fanout as fanout\n",
    ],
)
def test_an_import_of_operator_tooling_is_reported_with_file_and_line(source: str) -> None:
    # Given a layer module that imports from outside the runtime, on its second line
    src = '"""A module."""\n' + source
    # When it is checked
    violations = forbidden_imports(src, "crm/new.py", NOT_IN_THE_LAYER)
    # Then it is reported at that file and line
    assert [str(v).split(": ")[0] for v in violations] == ["crm/new.py:2"]


def test_a_relative_or_lookalike_import_is_not_reported() -> None:
    # Given imports that only look like the forbidden ones
    src = "from . import tests\nimport benchmarks\nimport aftercall_opsx\n"
    # When checked, Then nothing is reported
    assert forbidden_imports(src, "x.py", NOT_IN_THE_LAYER) == []


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("import boto3\n\nboto3.client('sqs')\n", "boto3.client"),
        ("import boto3 as b\n\nb.resource('dynamodb')\n", "boto3.resource"),
        ("import boto3\n\nboto3.session.Session()\n", "boto3.session.Session"),
        ("from boto3.session import Session as S\n\nS()\n", "boto3.session.Session"),
        ("from boto3 import Session\n\nSession().client('sns')\n", "boto3.Session"),
    ],
)
def test_a_boto3_client_made_outside_aws_py_is_reported(source: str, name: str) -> None:
    # Given a module that makes its own boto3 client on line 3
    # When it is checked
    violations = boto3_factories(source, "notifications.py")
    # Then the call is named with its file and line
    assert [str(v) for v in violations] == [
        f"notifications.py:3: calls {name} (make clients with aftercall.aws.client)"
    ]


def test_a_client_from_the_seam_is_not_reported() -> None:
    # Given a module that asks the seam for its client
    src = "from aftercall import aws\n\naws.client('sqs').send_message(QueueUrl='q', MessageBody='b')\n"
    # When checked, Then nothing is reported
    assert boto3_factories(src, "failures.py") == []


@pytest.mark.parametrize(
    "source",
    ["import urllib3\n", "from http.client import HTTPSConnection\n", "import urllib.request\n", "import requests\n"],
)
def test_an_http_library_import_outside_the_seam_is_reported(source: str) -> None:
    # Given a module that imports an HTTP client library
    # When it is checked
    violations = forbidden_imports(source, "follow_ups.py", HTTP_LIBRARIES)
    # Then it is reported at its file and line
    assert violations
    assert str(violations[0]).startswith("follow_ups.py:1: imports ")


def test_urllib_parse_is_not_an_http_client() -> None:
    # Given a module that only quotes URLs
    src = "from urllib.parse import quote\nimport urllib.parse\n"
    # When checked, Then nothing is reported
    assert forbidden_imports(src, "crm/salesforce.py", HTTP_LIBRARIES) == []


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("import requests\n\nrequests.post('https://crm.example', timeout=5)\n", "requests.post"),
        ("import requests\n\nrequests.Session()\n", "requests.Session"),
        ("from requests import get\n\nget('https://crm.example', timeout=5)\n", "requests.get"),
        ("from requests.adapters import HTTPAdapter\n\nHTTPAdapter()\n", "requests.adapters.HTTPAdapter"),
    ],
)
def test_sending_with_requests_outside_the_seam_is_reported(source: str, name: str) -> None:
    # Given a module that sends (or builds a transport) with requests on line 3
    # When it is checked
    violations = requests_senders(source, "crm/hubspot.py")
    # Then the call is named with its file and line
    assert [str(v) for v in violations] == [
        f"crm/hubspot.py:3: calls {name} (send through aftercall.crm.http.CrmHttpClient)"
    ]


def test_a_type_only_use_of_requests_is_not_a_send() -> None:
    # Given a module that uses requests.Response only in annotations
    src = "import requests\n\ndef hook(response: requests.Response) -> int:\n    return response.status_code\n"
    # When checked, Then nothing is reported
    assert requests_senders(src, "crm/salesforce.py") == []


def test_a_class_in_an_entry_point_is_reported() -> None:
    # Given an entry point that defines a class on line 3
    src = "import os\n\nclass Sender:\n    pass\n"
    # When it is checked
    violations = thick_entry_point(src, "functions/follow_up/app.py")
    # Then it is reported at that file and line
    assert [str(v) for v in violations] == [
        "functions/follow_up/app.py:3: defines class Sender (logic belongs in the layer)"
    ]


def test_a_long_entry_point_is_reported() -> None:
    # Given an entry point one line over the limit
    src = "x = 1\n" * (MAX_ENTRY_POINT_LINES + 1)
    # When it is checked
    violations = thick_entry_point(src, "functions/ingest/app.py")
    # Then its length is reported, naming the file
    assert [str(v) for v in violations] == [
        f"functions/ingest/app.py:{MAX_ENTRY_POINT_LINES + 1}: "
        f"{MAX_ENTRY_POINT_LINES + 1} lines, over {MAX_ENTRY_POINT_LINES} (logic belongs in the layer)"
    ]


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("import os\n\nos.environ['STAGE']\n", "os.environ"),
        ("import os\n\nos.environ.get('STAGE')\n", "os.environ"),
        ("import os\n\nos.getenv('STAGE')\n", "os.getenv"),
        ("from os import environ\n\nenviron.get('STAGE')\n", "os.environ"),
        ("import os as o\n\nvalues = o.environ\n", "os.environ"),
    ],
)
def test_an_environment_read_outside_settings_is_reported(source: str, name: str) -> None:
    # Given a module that reads the environment on line 3
    # When it is checked
    violations = environment_reads(source, "follow_ups/send.py")
    # Then the read is named with its file and line
    assert [str(v) for v in violations] == [f"follow_ups/send.py:3: reads {name} (use aftercall.settings)"]


def test_an_attribute_named_environ_is_not_an_environment_read() -> None:
    # Given a module whose own object has an ``environ`` attribute, and os used for paths only
    src = "import os\n\nrequest.environ.get('x')\nos.path.join('a', 'b')\n"
    # When checked, Then nothing is reported
    assert environment_reads(src, "ingest/service.py") == []


def test_an_oversized_module_or_class_is_reported() -> None:
    # Given a module with a class one line over the limit, in a module over its own limit
    body = "    x = 1\n" * MAX_CLASS_LINES
    src = "class Big:\n" + body + "\n" * (MAX_MODULE_LINES - MAX_CLASS_LINES)
    # When it is checked
    violations = oversized(src, "testing.py")
    # Then both are reported
    assert [str(v) for v in violations] == [
        f"testing.py:1: class Big is {MAX_CLASS_LINES + 1} lines, over {MAX_CLASS_LINES}",
        f"testing.py:{MAX_MODULE_LINES + 1}: {MAX_MODULE_LINES + 1} lines, over {MAX_MODULE_LINES}",
    ]


def test_a_class_name_defined_twice_is_found() -> None:
    # Given two modules that define the same class name
    sources = [("ops/a.py", "class Action:\n    pass\n"), ("layers/b.py", "x = 1\n\nclass Action:\n    pass\n")]
    # When their class names are collected, Then both places are named
    assert class_names(sources)["Action"] == ["ops/a.py:1", "layers/b.py:3"]


# -- ops/: the operator tooling ------------------------------------------------------------------


def test_the_emulator_never_imports_the_operations_it_hosts() -> None:
    # Given every module of the emulator
    modules = _ops_modules("emulator")
    assert len(modules) >= 8, "the emulator's modules were not found"
    # When their imports are read
    violations = [v for rel, src in modules for v in forbidden_imports(src, rel, NOT_IN_THE_EMULATOR)]
    # Then none reaches operations/ or cli/: the operations run against it as against AWS
    assert not violations, _report(violations)


def test_the_fakes_import_nothing_of_ours_but_the_fakes() -> None:
    # Given every fake
    modules = _ops_modules("fakes")
    assert len(modules) >= 5, "the fakes were not found"
    # When their imports are read, Then none reaches the emulator, the operations, the CLI or our data
    violations = [v for rel, src in modules for v in forbidden_imports(src, rel, NOT_IN_THE_FAKES)]
    assert not violations, _report(violations)


def test_options_and_printing_libraries_are_only_used_by_the_cli() -> None:
    # Given every ops module outside cli/
    modules = [(rel, src) for rel, src in _ops_modules() if not rel.startswith("cli/")]
    # When their imports are read
    violations = [v for rel, src in modules for v in forbidden_imports(src, rel, CLI_LIBRARIES)]
    # Then none imports typer or rich: options and printing live in cli/, logic everywhere else
    assert not violations, _report(violations)


def test_ops_modules_and_classes_stay_small() -> None:
    # Given every ops module but the listed exceptions
    modules = [(rel, src) for rel, src in _ops_modules() if rel not in SIZE_EXCEPTIONS]
    assert len(modules) > 40, "the ops modules were not found"
    # When each is measured
    violations = [v for rel, src in modules for v in oversized(src, rel)]
    # Then none is over 500 lines and no class over 300
    assert not violations, _report(violations)


@pytest.mark.parametrize(
    ("source", "prefixes"),
    [
        ("from aftercall_ops.operations.replay import replay\n", NOT_IN_THE_EMULATOR),
        ("import aftercall_ops.cli.common\n", NOT_IN_THE_EMULATOR),
        ("from aftercall_ops.generate import CUSTOMERS\n", NOT_IN_THE_FAKES),
        ("from rich.console import Console\n", CLI_LIBRARIES),
        ("import typer\n", CLI_LIBRARIES),
    ],
)
def test_an_ops_import_across_its_folders_is_reported(source: str, prefixes: tuple[str, ...]) -> None:
    # Given a module that imports across the line, on its first line
    # When it is checked, Then it is reported at that line
    assert [str(v).split(": ")[0] for v in forbidden_imports(source, "emulator/x.py", prefixes)] == ["emulator/x.py:1"]
