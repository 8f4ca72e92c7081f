#!/usr/bin/env bash
# The GPU check of issue 12, in under 5 minutes on one CUDA card:
#   (i)   the core tests on CUDA (SIMAM2_TEST_DEVICE=cuda),
#   (ii)  the core benchmark on CUDA (ratio to vanilla gated summation, eager and compiled, at the
#         six shapes of issue 19 and the late-fusion one; beside each sum shape, the bytes the
#         SimAM² node moves per call against vanilla's and its fraction of a large copy's bandwidth,
#         measured in the same run) and the achieved memory bandwidth of the fused attention at a
#         large late-fusion shape against the card's peak,
#   (iii) host syncs per training step with SimAM2(zeta_mode="learnable") + GradientModulator(noise=True)
#         attached to SGD (torch.cuda.set_sync_debug_mode; expected 0),
#   (iv)  one OGM-GE epoch on synthetic CREMA-D through the CLI, SimAM² + DF against vanilla (ratio).
#
#     bash benchmarks/gpu_check.sh          # results in $OUT if set, else ./gpu_check_out
#
# Without CUDA every part says what it skipped and the script still ends 0 (a dry run); set
# GPU_CHECK_CPU_EPOCH=1 to run (iv) on the CPU anyway (minutes). PYTHON picks the interpreter
# (default: python). Expected time on an H100: about 3 minutes; each part has a time limit (465 s
# in all at worst). Exit status: 1 if a part that ran failed or ran out of time.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-./gpu_check_out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
status=0
say() { echo "$*" | tee -a "$SUMMARY"; }
part() {  # part NAME LIMIT_S CMD...: run with a time limit, log to $OUT/NAME.log, note failure
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    grep -E '^(SKIP|bandwidth|memory bandwidth|syncs|epoch|torch |\(|[0-9]+ (passed|failed)|=+ .*(passed|failed|skipped))' "$OUT/$name.log" \
        | tee -a "$SUMMARY"
    if [ $rc -ne 0 ]; then
        say "FAIL $name: exit $rc after $((SECONDS - t0)) s (limit $limit s); see $OUT/$name.log"
        status=1
    else
        say "done $name in $((SECONDS - t0)) s"
    fi
}

say "gpu_check $(date -u +%FT%TZ) on $(hostname)"
$PY - <<'PYEOF' | tee -a "$SUMMARY"
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
PYEOF
if $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    cuda=1
else
    cuda=0
fi

# (i) the core tests on CUDA (the inductor cases are marked slow and stay out)
if [ $cuda = 1 ]; then
    SIMAM2_TEST_DEVICE=cuda part core_tests_cuda 90 $PY -m pytest -q -p no:cacheprovider \
        tests/test_energy.py tests/test_fused.py tests/test_fusion.py tests/test_forms.py \
        tests/test_modulation.py tests/test_autocast_compile.py
else
    say "SKIP core tests on CUDA: no CUDA device (on the CPU they are the default suite: python -m pytest)"
fi

# (ii) the core benchmark and the fused attention's bandwidth
if [ $cuda = 1 ]; then
    part bench_core_eager 45 $PY benchmarks/bench_core.py --device cuda --modes eager --repeats 50 \
        --json "$OUT/bench_core_eager.json"
    part bench_core_compiled 120 $PY benchmarks/bench_core.py --device cuda --modes compiled --repeats 50 \
        --shapes map-64,map-32-14 --json "$OUT/bench_core_compiled.json"
else
    say "SKIP core benchmark on CUDA: no CUDA device (on the CPU: python benchmarks/bench_core.py)"
fi
part bandwidth 30 $PY benchmarks/gpu_checks.py bandwidth --out "$OUT"

# (iii) host syncs per training step with decoupling-free modulation
part syncs 30 $PY benchmarks/gpu_checks.py syncs --out "$OUT"

# (iv) one OGM-GE epoch on synthetic CREMA-D through the CLI, SimAM² + DF against vanilla
if [ $cuda = 1 ]; then
    part epoch 120 $PY benchmarks/gpu_checks.py epoch --out "$OUT" --repeats 2
elif [ "${GPU_CHECK_CPU_EPOCH:-0}" = 1 ]; then
    part epoch 900 $PY benchmarks/gpu_checks.py epoch --out "$OUT" --repeats 1 --cpu
else
    say "SKIP OGM-GE epoch ratio: no CUDA device (GPU_CHECK_CPU_EPOCH=1 runs it on the CPU, minutes)"
fi

say "results in $OUT (summary.txt, *.log, *.json); exit $status"
exit $status
