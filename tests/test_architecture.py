"""The layering rules (STYLE rules 1, 14 and 15), checked with `ast` over the source files."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = frozenset({".venv", ".bangfu", ".git", "__pycache__", "node_modules"})
FRAMEWORKS = frozenset(
    {
        "fastapi",
        "starlette",
        "sqlalchemy",
        "nats",
        "httpx",
        "alembic",
        "uvicorn",
        "pydantic_settings",
    }
)
PRINT_ALLOWED = ("bangfu", "bench")


@dataclass(frozen=True)
class Module:
    """One source file and its dotted name (`services.registry.domain.household`)."""

    path: Path
    name: str
    is_package: bool

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))

    def source(self) -> str:
        return self.path.read_text(encoding="utf-8")


def _module_of(path: Path) -> Module:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return Module(path=path, name=".".join(parts), is_package=is_package)


def project_modules() -> list[Module]:
    """Every Python file of the project, outside virtualenvs and build output."""
    return [
        _module_of(path)
        for path in sorted(ROOT.rglob("*.py"))
        if not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)
        and not path.relative_to(ROOT).parts[0].endswith(".egg-info")
    ]


def modules_under(*prefix: str) -> list[Module]:
    return [m for m in project_modules() if m.parts[: len(prefix)] == prefix]


def imported_modules(source: str, *, module: str = "", is_package: bool = False) -> set[str]:
    """The absolute dotted names a source imports, relative imports resolved against `module`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, module=module, is_package=is_package)
            found.add(base)
            # `from services import registry` imports services.registry.
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and _call_name(node) in {"importlib.import_module", "import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return {name for name in found if name}


def _resolve_from(node: ast.ImportFrom, *, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join([*base, *([node.module] if node.module else [])])


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return ""


def _top(name: str) -> str:
    return name.split(".")[0]


def framework_imports(source: str) -> set[str]:
    """The framework modules (FRAMEWORKS) a source imports."""
    return {name for name in imported_modules(source) if _top(name) in FRAMEWORKS}


def foreign_service_imports(source: str, *, module: str, is_package: bool = False) -> set[str]:
    """The imports of `services.<b>` from a module of `services.<a>`, b ≠ a."""
    own = module.split(".")[1]
    return {
        name
        for name in imported_modules(source, module=module, is_package=is_package)
        if name.startswith("services.") and name.split(".")[1] != own
    }


def application_imports(source: str, *, module: str, is_package: bool = False) -> set[str]:
    """The imports of services, bangfu or sandbox (forbidden in the `shared` library)."""
    return {
        name
        for name in imported_modules(source, module=module, is_package=is_package)
        if _top(name) in {"services", "bangfu", "sandbox"}
    }


def print_calls(source: str) -> list[int]:
    """The line numbers of `print(...)` calls."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and _call_name(node) == "print"
    ]


def _violations(found: Iterator[tuple[Module, object]]) -> dict[str, object]:
    return {module.name: what for module, what in found if what}


class TestModuleDiscovery:
    def test_the_checks_see_every_package_of_the_project(self) -> None:
        tops = {module.parts[0] for module in project_modules()}

        assert {"shared", "services", "bangfu", "sandbox", "tests"} <= tops
        assert not any(".venv" in module.path.parts for module in project_modules())

    def test_the_domain_check_sees_the_registry_domain(self) -> None:
        names = {module.name for module in modules_under("services")}

        assert "services.registry.domain.household" in names


class TestDomainImportsNoFramework:
    def test_no_domain_module_imports_a_framework(self) -> None:
        domain = [m for m in modules_under("services") if m.parts[2:3] == ("domain",)]

        assert domain, "no domain modules found"
        assert _violations((m, framework_imports(m.source())) for m in domain) == {}

    def test_the_checker_catches_a_framework_import(self) -> None:
        source = (
            "import sqlalchemy as sa\n"
            "from fastapi import HTTPException\n"
            "from pydantic_settings import BaseSettings\n"
            "def f():\n    import nats.js\n"
            "from dataclasses import dataclass\n"
            "import pydantic\n"
        )

        assert framework_imports(source) == {
            "sqlalchemy",
            "fastapi",
            "fastapi.HTTPException",
            "pydantic_settings",
            "pydantic_settings.BaseSettings",
            "nats.js",
        }


class TestServicesDoNotImportEachOther:
    def test_no_service_imports_another_service(self) -> None:
        modules = [m for m in modules_under("services") if len(m.parts) > 1]

        found = (
            (m, foreign_service_imports(m.source(), module=m.name, is_package=m.is_package))
            for m in modules
        )
        assert _violations(found) == {}

    def test_the_checker_catches_an_absolute_import_of_another_service(self) -> None:
        source = "from services.registry.domain.events import HouseholdApplied\n"

        found = foreign_service_imports(source, module="services.benefits.consumers")

        assert "services.registry.domain.events" in found

    def test_the_checker_catches_a_relative_import_of_another_service(self) -> None:
        source = "from ...registry import store\n"

        found = foreign_service_imports(source, module="services.benefits.domain.rules")

        assert found == {"services.registry", "services.registry.store"}

    def test_the_checker_catches_an_import_of_a_sibling_through_the_parent_package(self) -> None:
        found = foreign_service_imports(
            "from services import registry\n", module="services.benefits.app"
        )

        assert found == {"services.registry"}

    def test_the_checker_lets_a_service_import_itself(self) -> None:
        source = "from services.registry.store import metadata\nfrom .events import X\n"

        found = foreign_service_imports(source, module="services.registry.domain.household")

        assert found == set()


class TestSharedIsALibrary:
    def test_nothing_in_shared_imports_services_bangfu_or_sandbox(self) -> None:
        modules = modules_under("shared")

        assert modules, "no shared modules found"
        found = (
            (m, application_imports(m.source(), module=m.name, is_package=m.is_package))
            for m in modules
        )
        assert _violations(found) == {}

    def test_the_checker_catches_an_import_of_a_service_cli_or_sandbox(self) -> None:
        source = (
            "from services.registry.store import household\n"
            "import bangfu.cli\n"
            "import importlib\n"
            "app = importlib.import_module('sandbox.app')\n"
        )

        found = application_imports(source, module="shared.db")

        assert found == {
            "services.registry.store",
            "services.registry.store.household",
            "bangfu.cli",
            "sandbox.app",
        }


class TestNoPrintOutsideTheCli:
    def test_only_the_cli_and_the_benchmarks_call_print(self) -> None:
        modules = [m for m in project_modules() if m.parts[0] not in PRINT_ALLOWED]

        assert _violations((m, print_calls(m.source())) for m in modules) == {}

    def test_the_checker_catches_a_print_call(self) -> None:
        source = 'import sys\ndef f():\n    print("hello", file=sys.stderr)\nsay = print\n'

        assert print_calls(source) == [3]
