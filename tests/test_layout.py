"""The house rule: a stage imports only the hub, never another stage, and the hub imports no stage.

Stages talk to each other through files (checkpoint dir -> ART), so a stage may change its insides
without breaking another. The stage folders sit at the repository root and are mapped into the
``fsqdeploy`` namespace by pyproject's package-dir table, which hides their imports from static import
tools; this test reads every module's imports with ``ast`` instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train", "export", "runtime", "calibration")
# The CLI assembles each stage's commands; it is the one hub module that names the stages.
HUB_MAY_IMPORT_STAGES = {ROOT / "fsqdeploy" / "cli.py"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # "from fsqdeploy import export" imports a stage too
            if node.module == "fsqdeploy":
                found += [(node.lineno, f"fsqdeploy.{alias.name}") for alias in node.names]
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "fsqdeploy" and parts[1] in STAGES else None


def sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "cpp" not in p.relative_to(ROOT).parts)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_the_hub_and_itself(stage: str) -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for path in sources(stage) for line, module in imported_modules(path)
                 if stage_of(module) not in (None, stage)]
    assert offenders == []


def test_the_hub_imports_no_stage() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for path in sources("fsqdeploy") if path not in HUB_MAY_IMPORT_STAGES
                 for line, module in imported_modules(path) if stage_of(module)]
    assert offenders == []


def test_the_checker_sees_a_cross_stage_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from fsqdeploy.export.parity import run_parity\n")
    assert [stage_of(m) for _, m in imported_modules(module)] == ["export"]
