"""docs/architecture.md names every module of the package, so a newcomer finds each from it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_architecture_names_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    lines = doc.splitlines()
    missing = []
    for module in sorted((ROOT / "internlocal").rglob("*.py")):
        rel = module.relative_to(ROOT / "internlocal")
        if module.name == "__init__.py" and rel.parent.name != "services":  # services/__init__ holds Services
            continue
        package = rel.parent.as_posix()
        if rel.as_posix() in doc:
            continue
        # a module named by its file name where its package is named on the same line (the tables, the lists)
        if package != "." and any(module.name in line and f"{package}/" in line for line in lines):
            continue
        if package == "." and f"`{module.name}`" in doc:
            continue
        missing.append(rel.as_posix())
    assert not missing, f"docs/architecture.md does not name: {missing}"
