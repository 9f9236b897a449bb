"""Which library modules a stage script uses, so that its rule can list them as inputs.

Snakemake reruns a job when its own script changes, not when a module the script imports does.
Scanning the imports (with `ast`, nothing is executed) keeps those input lists exact without
maintaining them by hand. Runs at parse time: standard library only.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "dynsparse"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                base = f"{PACKAGE}.{node.module}" if node.module else PACKAGE
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name.startswith(f"{PACKAGE}.")}


def library_modules(script: str | Path, package_dir: str | Path) -> list[str]:
    """Every module file of the package that `script` imports, directly or through others."""
    package_dir = Path(package_dir)
    found: set[Path] = set()
    pending = [Path(script)] if Path(script).is_file() else []
    while pending:
        for name in _imported_modules(pending.pop()):
            module = package_dir / (name.split(".", 1)[1].replace(".", "/") + ".py")
            if module.is_file() and module not in found:
                found.add(module)
                pending.append(module)
    return sorted(str(path) for path in found)
