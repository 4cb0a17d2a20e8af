"""Rules about the code itself, checked on every module of the five packages with `ast`.

No private name crosses a module boundary: a name that starts with one underscore belongs to
the module that defines it. Another module that needs it means the name is really shared, so it
is made public (or moved to where both can see it) instead of reached into.
"""

import ast
import builtins
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "storage", "producers", "workers", "ops")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _absolute(node: ast.ImportFrom, my_package: str) -> str:
    """The absolute module a `from ... import` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = my_package.split(".")
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _private_crossings(me: str, is_package: bool, source: str) -> Iterator[str]:
    """`from ours import _name`, and `mod._name` where `mod` is one of our modules imported here.
    A package's own modules may use the private names of its `__init__`."""
    my_package = me if is_package else me.rpartition(".")[0]
    tree = ast.parse(source)
    modules_bound: dict[str, str] = {}  # local name -> our module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, my_package)
            if not _is_ours(source):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    modules_bound[alias.asname or alias.name] = submodule
                    if not _is_private(alias.name):
                        continue
                if _is_private(alias.name) and source != my_package and source != me:
                    yield f"{me}:{node.lineno} imports {alias.name} from {source}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if not _is_ours(alias.name):
                    continue
                if alias.asname:
                    modules_bound[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    modules_bound[top] = top
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = _module_of(node.value, modules_bound)
            if owner and owner not in (me, my_package):
                yield f"{me}:{node.lineno} uses {owner}.{node.attr}"


def _module_of(expr: ast.expr, modules_bound: dict[str, str]) -> str | None:
    """The module of ours an expression such as `ledger` or `storage.ledger` stands for."""
    if isinstance(expr, ast.Name):
        return modules_bound.get(expr.id)
    if isinstance(expr, ast.Attribute):
        parent = _module_of(expr.value, modules_bound)
        if parent and f"{parent}.{expr.attr}" in MODULES:
            return f"{parent}.{expr.attr}"
    return None


def test_the_rule_sees_every_package() -> None:
    assert {name.split(".")[0] for name in MODULES} == set(PACKAGES)


def test_no_private_name_is_imported_across_modules() -> None:
    """In the five packages and in the tests: a test that needs a private name is testing a
    detail, or the name should be public."""
    tests = {_module_name(path): path for path in (ROOT / "tests").rglob("*.py")}
    crossings = [
        crossing
        for name, path in sorted({**MODULES, **tests}.items())
        for crossing in _private_crossings(
            name, path.name == "__init__.py", path.read_text(encoding="utf-8")
        )
    ]
    assert crossings == [], "make these names public or move them:\n" + "\n".join(crossings)


def test_the_rule_catches_both_forms() -> None:
    """The checker itself: a from-import of a private name and a reach into an imported module
    are both caught; `__future__`, dunder names and a package's own `__init__` are not."""
    sample = (
        "from __future__ import annotations\n"
        "from storage.ledger import _view\n"
        "from storage import ledger\n"
        "import storage.clock as clock\n"
        "import storage.engine\n"
        "from ops import __doc__, _package_private\n"
        "ledger._hidden\n"
        "clock.__name__\n"
        "storage.engine._secret\n"
    )
    assert list(_private_crossings("ops.sample", False, sample)) == [
        "ops.sample:2 imports _view from storage.ledger",
        "ops.sample:7 uses storage.ledger._hidden",
        "ops.sample:9 uses storage.engine._secret",
    ]


ERRORS = ROOT / "schemas" / "errors.py"


def _error_classes() -> set[str]:
    tree = ast.parse(ERRORS.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def _base_name(base: ast.expr) -> str:
    if isinstance(base, ast.Attribute):
        return base.attr
    return base.id if isinstance(base, ast.Name) else ""


def test_every_exception_class_is_in_schemas_errors() -> None:
    """A class deriving from a built-in exception or from one of schemas/errors.py's is defined
    in schemas/errors.py, nowhere else."""
    exception_bases = _error_classes() | {
        name
        for name in dir(builtins)
        if isinstance(getattr(builtins, name), type)
        and issubclass(getattr(builtins, name), BaseException)
    }
    elsewhere = [
        f"{name}:{node.lineno} class {node.name}"
        for name, path in sorted(MODULES.items())
        if path != ERRORS
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
        and any(_base_name(base) in exception_bases for base in node.bases)
    ]
    assert elsewhere == [], "move these to schemas/errors.py:\n" + "\n".join(elsewhere)


def test_the_errors_module_draws_every_class_in_its_tree() -> None:
    tree = ast.get_docstring(ast.parse(ERRORS.read_text(encoding="utf-8"))) or ""
    drawn = {line.split("──")[-1].split()[0] for line in tree.splitlines() if "──" in line}
    assert _error_classes() <= drawn, f"add to the tree: {sorted(_error_classes() - drawn)}"
