#!/usr/bin/env bash
# The GPU check (issue 16, target 6): on a host with an NVIDIA GPU, run the text throughput
# benchmark (bench/embed_throughput.py: the loops a user writes, Ray Data, Sluice end to end)
# on the GPU and record items/s, batch fill, token fill and GPU utilisation per timed section;
# then embed again in float32, to show what SLUICE_INFERENCE_DTYPE=auto (bfloat16) gives.
#
#     bench/gpu_check.sh [OUT_DIR]          (default ./gpu-check; $OUT when set, e.g. a CI's)
#
# At most 8 minutes (each step has its own timeout; the float32 pass is skipped when too
# little time is left). Needs the project's venv with a CUDA build of torch (PYTHON=... to
# use another interpreter). Exits 2 at once, saying why, where there is no usable GPU: this
# check never falls back to the CPU (bench/embed_throughput.py is the CPU benchmark).
# Writes to OUT_DIR: throughput.txt/.json (bfloat16 or whatever auto resolves to),
# float32.txt/.json, gpu_samples.csv (nvidia-smi every 200 ms), summary.json (all of it, and
# the mean GPU utilisation within each timed section), and prints the summary.
set -euo pipefail

BUDGET_S=480
started=$(date +%s)
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
py=${PYTHON:-.venv/bin/python}

fail() {
    echo "gpu_check: $*" >&2
    exit 2
}

left() { echo $((BUDGET_S - ($(date +%s) - started))); }

command -v nvidia-smi >/dev/null 2>&1 ||
    fail "no nvidia-smi on this host: this check needs an NVIDIA GPU and its driver (run bench/embed_throughput.py for the CPU figures)"
nvidia-smi -L >/dev/null 2>&1 ||
    fail "nvidia-smi finds no GPU ($(nvidia-smi -L 2>&1 | head -1)); check the driver and that the GPU is visible to this container"
[ -x "$py" ] || fail "no Python at $py: run 'make install' first (with a CUDA build of torch), or set PYTHON"
"$py" - <<'EOF' || fail "torch cannot use the GPU (see above): install a CUDA build of torch matching the driver"
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no GPU")
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}")
EOF

mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/gpu.txt"
# GPU utilisation and memory every 200 ms, for the whole check; matched to the sections after
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
    --format=csv,noheader,nounits -lms 200 >"$out/gpu_samples.csv" &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT

# A GPU runs these in seconds: sizes that keep each timed section long enough to sample.
echo "gpu_check: throughput in the default precision (SLUICE_INFERENCE_DTYPE=${SLUICE_INFERENCE_DTYPE:-auto})"
timeout $(($(left) - 90)) "$py" bench/embed_throughput.py --docs 10000 --mix-docs 1000 \
    --task-docs 4000 --rounds 2 --json-out "$out/throughput.json" | tee "$out/throughput.txt" ||
    fail "the benchmark failed or ran past its time (see above and $out/throughput.txt)"

if [ "$(left)" -gt 100 ]; then
    echo "gpu_check: embed again in float32 ($(left) s left)"
    SLUICE_INFERENCE_DTYPE=float32 timeout $(($(left) - 10)) "$py" bench/embed_throughput.py \
        --docs 10000 --cases embed --rounds 1 --no-ray-data --json-out "$out/float32.json" |
        tee "$out/float32.txt" || echo "gpu_check: the float32 pass did not finish" >&2
else
    echo "gpu_check: float32 pass skipped, $(left) s left" >&2
fi
kill "$sampler" 2>/dev/null || true

"$py" - "$out" <<'EOF'
import csv, json, sys
from datetime import datetime
from pathlib import Path

out = Path(sys.argv[1])
samples = []
for row in csv.reader((out / "gpu_samples.csv").read_text().splitlines()):
    try:
        when = datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
        samples.append((when, float(row[1]), float(row[2])))
    except (ValueError, IndexError):
        continue  # a line cut short when the sampler stopped

def utilisation(window):
    inside = [(u, m) for t, u, m in samples if window[0] <= t <= window[1]]
    if not inside:
        return {"samples": 0}
    return {"samples": len(inside),
            "gpu_util_mean_pct": round(sum(u for u, _ in inside) / len(inside), 1),
            "memory_used_max_mib": max(m for _, m in inside)}

summary = {"gpu": (out / "gpu.txt").read_text().strip()}
for name in ("throughput", "float32"):
    path = out / f"{name}.json"
    if not path.is_file():
        summary[name] = None
        continue
    found = json.loads(path.read_text())
    found["gpu_utilisation"] = {k: utilisation(w) for k, w in found.pop("windows", {}).items()}
    summary[name] = found
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
main = summary["throughput"] or {}
devices = {case: f["actor_device"] for case, f in main.get("items_per_s", {}).items()}
if main.get("device") != "cuda" or set(devices.values()) != {"cuda"}:
    sys.exit(f"gpu_check: the loops ran on {main.get('device')!r} and Sluice's actors on "
             f"{devices}, not all on the GPU: is the Ray head started with the GPU visible?")
print(json.dumps(summary))
EOF
echo "gpu_check: done in $(($(date +%s) - started)) s; figures in $out/summary.json"
