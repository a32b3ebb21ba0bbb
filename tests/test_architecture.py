"""The package's architecture: layers, private modules, and a command line that loads no more than it needs.

* The import-linter contracts of ``pyproject.toml`` (``[tool.importlinter]``) are kept: each
  subpackage imports only the layers below it (``lint-imports`` prints the contract).
* No module imports a private (underscore) module of another subpackage: ``bayeslmm.freq._fit``
  may import ``bayeslmm.freq._objective`` and ``bayeslmm._errors``, but ``bayeslmm.bayes._structure``
  may not import ``bayeslmm.linalg._blocks``; it imports ``bayeslmm.linalg`` and the subpackage
  exports what others need. Imports inside functions count, relative imports are resolved.
* ``bayeslmm fit`` imports neither PyMC nor the plotting and out-of-core stacks.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "bayeslmm"

#: Private imports across subpackages that exist today, file -> imported private modules, to be emptied as the
#: subpackages export what the others need. A file listed here may keep importing these modules (and no other
#: private module of another subpackage); an entry that is no longer needed fails the test below, so the list
#: only shrinks.
ALLOWED: dict[str, set[str]] = {}


@dataclass(frozen=True)
class PrivateImport:
    """``file`` (line ``line``) imports the private module ``imported`` of a package it is not in."""

    file: str
    line: int
    imported: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: imports {self.imported}"


def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _module_name(path: Path, root: Path) -> tuple[str, str]:
    """The dotted name of the module in ``path`` and of the package its relative imports start from."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _is_module(name: str, root: Path) -> bool:
    p = root.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _imported_modules(node: ast.Import | ast.ImportFrom, package: str, root: Path) -> list[str]:
    """The modules an import statement loads: ``from .a import b`` names ``pkg.a``, and ``pkg.a.b`` when b is one."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = package.split(".")
        base = base[: len(base) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return [mod] + [f"{mod}.{a.name}" for a in node.names if _is_module(f"{mod}.{a.name}", root)]


def private_imports(root: Path, package: str = PACKAGE) -> list[PrivateImport]:
    """Every import, anywhere in a module of ``package`` under ``root``, of a private module from outside its parent.

    A module is private when a part of its name after the first starts with an underscore (not a
    dunder); it belongs to the package above its innermost private part, and only that package's
    modules may import it (``bayeslmm._errors`` belongs to ``bayeslmm``: everyone may import it).
    """
    found = []
    for path in sorted((root / package).rglob("*.py")):
        me, pkg = _module_name(path, root)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported_modules(node, pkg, root):
                parts = target.split(".")
                if parts[0] != package:
                    continue
                private = [i for i, part in enumerate(parts) if i > 0 and _is_private(part)]
                if not private:
                    continue
                owner = ".".join(parts[: private[-1]])
                if me != owner and not me.startswith(owner + "."):
                    found.append(PrivateImport(path.relative_to(root).as_posix(), node.lineno, target))
    return found


def test_the_scan_finds_relative_nested_and_from_imports(tmp_path: Path) -> None:
    """The checker itself: the imports it must flag and those it must let through."""
    src = {
        "pkg/__init__.py": "from . import _util\n",
        "pkg/_util.py": "",
        "pkg/a/__init__.py": "from ._impl import f\n",
        "pkg/a/_impl.py": "from .._util import x\nfrom ..b import _hidden\n",
        "pkg/b/__init__.py": "",
        "pkg/b/_hidden.py": "",
        "pkg/b/user.py": textwrap.dedent("""\
            import pkg.a._impl
            from pkg.a import f


            def g():
                from ..a._impl import f
                from . import _hidden
                return f, _hidden
            """),
    }
    for name, text in src.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = {(v.file, v.line, v.imported) for v in private_imports(tmp_path, "pkg")}
    assert found == {
        ("pkg/a/_impl.py", 2, "pkg.b._hidden"),
        ("pkg/b/user.py", 1, "pkg.a._impl"),
        ("pkg/b/user.py", 6, "pkg.a._impl"),
    }


def test_no_module_imports_a_private_module_of_another_subpackage() -> None:
    found = private_imports(ROOT)
    new = [v for v in found if v.imported not in ALLOWED.get(v.file, set())]
    allowed = [v for v in found if v not in new]
    report = "\n".join(f"  {v}" for v in new)
    listed = "\n".join(f"  {v}" for v in allowed)
    assert not new, (
        f"{len(new)} import(s) of another subpackage's private module; import the subpackage and export "
        f"the name from its __init__.py instead:\n{report}\n(allowed for now, in ALLOWED:\n{listed})"
    )


def test_the_allow_list_only_shrinks() -> None:
    found = {(v.file, v.imported) for v in private_imports(ROOT)}
    stale = sorted((f, m) for f, mods in ALLOWED.items() for m in mods if (f, m) not in found)
    assert not stale, "no longer imported; remove from ALLOWED in tests/test_architecture.py:\n" + "\n".join(
        f"  {f}: {m}" for f, m in stale
    )


def test_the_import_contracts_are_kept() -> None:
    exe = Path(sys.executable).parent / "lint-imports"
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    try:
        r = subprocess.run([*cmd, "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        pytest.fail("lint-imports not found: pip install -e '.[test]' installs import-linter")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout and "KEPT" in r.stdout, r.stdout[-4000:]


def test_fit_from_the_command_line_loads_no_pymc() -> None:
    """``bayeslmm fit`` of a CSV file imports neither PyMC (nor PyTensor, ArviZ) nor matplotlib or Dask."""
    csv = ROOT.parent / "shared" / "data" / "pig_weights.csv"
    data = str(csv) if csv.is_file() else "pig_weights"  # the same data, bundled
    code = textwrap.dedent(f"""\
        import json, sys
        import bayeslmm.cli
        status = bayeslmm.cli.main(["fit", {data!r}, "-f", "weight ~ num_weeks + (1 | id_num)", "--json"])
        heavy = ("pymc", "pytensor", "arviz", "matplotlib", "dask", "distributed")
        print(json.dumps({{"status": status, "loaded": sorted(m for m in heavy if m in sys.modules)}}))
        """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    fit, last = r.stdout.strip().splitlines()[-2:]
    assert json.loads(fit)["nobs"] == 432
    assert json.loads(last) == {"status": 0, "loaded": []}
