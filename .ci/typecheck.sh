#!/usr/bin/env bash
# Type-check the TensorRT modules against tensorrt-stubs, so a misspelt TensorRT API fails here,
# on machines that cannot install TensorRT itself.
#
# tensorrt-stubs depends on NVIDIA's tensorrt bindings, which do not install without NVIDIA's
# index, so it is installed with --no-deps. It then makes `import tensorrt` succeed as an empty
# namespace package; fsqdeploy recognises a usable TensorRT by its API (tensorrt.Builder), never
# by a bare import, so the test suite treats that as "not installed".
#
# The wheel puts tensorrt/__init__.pyi and tensorrt_bindings/*.pyi into site-packages without a
# py.typed marker there, so mypy would skip them (and --ignore-missing-imports would turn every
# TensorRT call into Any). They are copied to a scratch directory on MYPYPATH instead, and a canary
# with a misspelt API must fail, which proves the stubs are in effect.
#
# Runs in the active virtualenv (CI: the one .ci/run made), or makes .ci-venv if none is active.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -d .ci-venv ] || python3 -m venv .ci-venv
    . .ci-venv/bin/activate
    python -c "import fsqdeploy" 2>/dev/null || { pip install -q torch==2.13.0 && pip install -q -e .; }
fi
pip install -q "mypy>=1.10"
pip install -q --no-deps "tensorrt-stubs>=10.13,<12"

stubs=$(mktemp -d)
trap 'rm -rf "$stubs"' EXIT
site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
for pkg in tensorrt tensorrt_bindings; do
    mkdir -p "$stubs/$pkg"
    cp "$site/$pkg/"*.pyi "$stubs/$pkg/"
done
# The generated stubs have a few signatures that are not valid Python (plugin methods with a
# parameter named `in`, and `add_scale_nd` with a required parameter after defaulted ones); mypy
# stops at syntax errors, so those lines are repaired in the copy. No API fsqdeploy calls changes.
python - "$stubs" <<'PY'
import ast, re, sys
from pathlib import Path

for path in Path(sys.argv[1]).rglob("*.pyi"):
    lines, fixed = path.read_text().splitlines(), 0
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("def "):
            continue
        try:
            ast.parse(line.strip() + " ...")
            continue
        except SyntaxError:
            pass
        new = re.sub(r"([(,]\s*)in:", r"\1in_:", line)
        head, _, params = new.partition("(")
        params, _, tail = params.rpartition(")")
        parts, seen_default = [], False
        for part in params.split(", "):
            if "=" in part:
                seen_default = True
            elif seen_default and ":" in part and not part.lstrip().startswith("*"):
                part += " = ..."
            parts.append(part)
        lines[i] = f"{head}({', '.join(parts)}){tail}"
        fixed += 1
    if fixed:
        path.write_text("\n".join(lines) + "\n")
PY

# Untyped third-party imports (onnx, onnxruntime) are followed silently; their errors are not ours,
# nor are the stubs' own (e.g. a module-level `bool` DataType that shadows the builtin).
cat > "$stubs/mypy.ini" <<'INI'
[mypy]
follow_imports = silent
ignore_missing_imports = True
check_untyped_defs = True
warn_unused_ignores = True
[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
ignore_errors = True
INI
run_mypy() {
    MYPYPATH="$stubs" mypy --config-file "$stubs/mypy.ini" --no-error-summary --cache-dir "$stubs/.mypy_cache" "$@"
}

canary="$stubs/canary.py"
printf 'import tensorrt as trt\n\ndef f(b: trt.Builder) -> None:\n    b.create_netwrk(0)\n' > "$canary"
if run_mypy "$canary" > /dev/null; then
    echo "typecheck: mypy accepts a misspelt TensorRT API, so tensorrt-stubs are not in effect" >&2
    exit 1
fi

run_mypy export/tensorrt/*.py fsqdeploy/backends/tensorrt.py fsqdeploy/backends/tensorrt_env.py
echo "typecheck: the TensorRT builder, runner and probes are clean against tensorrt-stubs"
