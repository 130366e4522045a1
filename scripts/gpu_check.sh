#!/usr/bin/env bash
# The GPU check: one command, a few minutes, on a lent GPU machine that has PyTorch (CUDA), ONNX
# Runtime for CPU and numpy but no network and no TensorRT.
#
#   scripts/gpu_check.sh OUT          (or GPU_CHECK_OUT=OUT scripts/gpu_check.sh)
#
# It installs the project without downloads against what is installed, trains a short run on the
# GPU (the summary says whether it ran under bfloat16 autocast), exports it, benches it with the GPU
# PyTorch reference (CUDA-event timing), runs the tests marked gpu (the TensorRT ones skip there
# with their reason) and writes OUT/summary.md, with each step's log beside it. A step that fails
# is recorded and the next still runs; the exit code is the number of failed steps (0: all passed).
# Wheels of packages the machine lacks can be carried in .gpu-wheels/ (git-ignored; make it here
# with `pip download --no-deps -d .gpu-wheels onnx-graphsurgeon`, the one dependency that machine
# lacks, and name it in the device run's carry list).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${GPU_CHECK_OUT:-}}"
if [ -z "$out" ]; then
    echo "usage: scripts/gpu_check.sh OUT (or set GPU_CHECK_OUT)" >&2
    exit 2
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
summary="$out/summary.md"
failed=0
budget_s=${GPU_CHECK_SECONDS:-330}  # the whole check must stay under 6 minutes
started=$(date +%s)

: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

# step NAME TIMEOUT_S COMMAND...: run it with its output in OUT/NAME.log; one summary line.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget_s - ($(date +%s) - started)))
    if [ "$left" -le 5 ]; then
        note "- $name: NOT RUN (the check's ${budget_s} s budget is spent)"
        failed=$((failed + 1))
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$(date +%s)
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    local dt=$(($(date +%s) - t0))
    if [ $rc -eq 0 ]; then
        note "- $name: ok (${dt} s)"
    else
        [ $rc -eq 124 ] && what="timed out after ${limit} s" || what="exit $rc"
        note "- $name: FAILED, $what (${dt} s); last lines of $name.log:"
        tail -n 8 "$out/$name.log" | sed 's/^/      /' | tee -a "$summary"
        failed=$((failed + 1))
    fi
}

note "# fsqdeploy GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
note ""
note "## Machine"
python3 - <<'PY' 2>&1 | tee -a "$summary"
import platform
import torch
print(f"- python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"- GPU: {p.name}, sm {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB")
else:
    print("- GPU: none visible to torch")
for name in ("onnxruntime", "onnx", "onnxscript", "tensorrt", "openvino", "onnx_graphsurgeon"):
    try:
        mod = __import__(name)
        print(f"- {name} {getattr(mod, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001 - a report, not a decision
        print(f"- {name}: not importable ({type(e).__name__})")
PY
note ""
note "## Steps"

# `timeout` runs programs, not shell functions, so the install is a bash -c of its own. No network:
# carried wheels first, then the project without build isolation (setuptools is installed) and
# without dependency resolution.
step install 120 bash -c '
    if compgen -G ".gpu-wheels/*.whl" > /dev/null; then
        python3 -m pip install --no-deps --no-index .gpu-wheels/*.whl || exit 1
    fi
    python3 -m pip install --no-deps --no-build-isolation -e . || exit 1
    python3 -c "import onnx_graphsurgeon" 2>/dev/null || {
        echo "onnx-graphsurgeon is missing: carry its wheel (pip download --no-deps -d .gpu-wheels onnx-graphsurgeon)"
        exit 1
    }
    python3 -c "import fsqdeploy.cli, fsqdeploy.runtime; print(\"fsqdeploy imports\")"'

step train 90 fsqdeploy train --data sample --steps 300 --device "${GPU_CHECK_DEVICE:-cuda}" --out "$work/run"
step export 90 fsqdeploy export "$work/run" --out "$work/art" --precision fp16
step bench 120 fsqdeploy bench "$work/art" --batch-sizes 1,256 --seconds 0.3 --images 256 \
    --no-baselines --tile-size 0 --json "$out/bench.json"
step pytest-gpu 120 python3 -m pytest -m gpu -q -rs -p no:cacheprovider

note ""
note "## Training (the run's metrics.jsonl)"
if [ -f "$work/run/metrics.jsonl" ]; then
    python3 - "$work/run/metrics.jsonl" <<'PY' 2>&1 | tee -a "$summary"
import json, sys
last = [json.loads(line) for line in open(sys.argv[1])][-1]
precision = f"{last['autocast']} autocast" if last.get("autocast") else "fp32"
print(f"- {last['step']} steps in {last['elapsed_s']:.0f} s, {precision}, "
      f"held-out PSNR {last['test_psnr']:.2f} dB, best step {last['best_step']}")
PY
fi
note ""
note "## Bench (fsqdeploy bench --json bench.json)"
if [ -f "$out/bench.json" ]; then
    python3 - "$out/bench.json" <<'PY' 2>&1 | tee -a "$summary"
import json, sys
report = json.load(open(sys.argv[1]))
for row in report.get("skipped", []):
    print(f"- {row.get('backend')}:{row.get('precision')}: skipped ({row.get('reason')})")
for row in report.get("results", []):
    photo = row.get("scope") == "photo"  # one whole image at --photo-size (conv models)
    if row.get("stage") == "roundtrip" and (photo or row.get("batch_size") == 256):
        h, w = row.get("image_size") or ("?", "?")
        what = f"one {w}x{h} photo" if photo else "batch 256"
        print(f"- {row['backend']}:{row['precision']} on {row.get('device', '?')}, roundtrip {what} "
              f"({row.get('timing')}, io {row.get('io')}): "
              f"p50 {row['latency_ms']['p50']:.3f} ms, {row['throughput_ips']:.0f} images/s")
for row in report.get("fidelity", []):
    gate = row.get("gate") or {}
    pixels = (f"decoded 8-bit pixels equal {row['pixel_agreement']} (max {row['max_pixel_error']} levels apart), "
              if "pixel_agreement" in row else "")
    print(f"- fidelity {row.get('backend')}:{row.get('precision')}: index agreement {row.get('index_agreement')}, "
          f"{pixels}gate {'passed' if gate.get('passed') else 'FAILED ' + '; '.join(gate.get('reasons', []))}")
print(f"- gates: {'passed' if report.get('gates', {}).get('passed') else report.get('gates')}")
PY
fi
note ""
note "## pytest -m gpu"
# the closing count, and each distinct skip reason once
tail -n 1 "$out/pytest-gpu.log" 2>/dev/null | sed 's/^/- /' | tee -a "$summary"
# "SKIPPED [N] file:line: reason": N tests per line, so the reasons are summed, not counted
grep -E "^SKIPPED" "$out/pytest-gpu.log" 2>/dev/null \
    | sed -E 's/^SKIPPED \[([0-9]+)\] [^:]+:[0-9]+: /\1\t/' \
    | awk -F '\t' '{n[$2] += $1} END {for (r in n) printf "- skipped x%d %s\n", n[r], r}' | sort | tee -a "$summary"
note ""
note "failed steps: $failed; total $(($(date +%s) - started)) s"
exit "$failed"
