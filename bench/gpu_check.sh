#!/usr/bin/env bash
# The GPU check of issue 15 in one call: every CUDA test, then the benchmark rows of the issue's GPU targets, each
# target judged met / missed / not measured, into OUTDIR (gpu_check.json, gpu_check.md, cuda_tests.xml and this
# run's log, gpu_check.log). See bench/gpu_check.py and docs/PERFORMANCE.md ("The GPU check").
#
#   bench/gpu_check.sh OUTDIR [--reference PATH] [--wheels DIR] [--budget-s SECONDS] [--rows a,b] [--dry-run]
#
# PYTHON picks the interpreter (default python3). Exit status: 0 when everything ran (whatever the verdicts),
# 1 when a CUDA test failed or a row raised, 2 on a usage error.
set -uo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bench/gpu_check.sh OUTDIR [--reference PATH] [--wheels DIR] [--budget-s S] [--rows a,b] [--dry-run]" >&2
    exit 2
fi
out=$1
shift
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.." || exit 2
PYTHONUNBUFFERED=1 "${PYTHON:-python3}" -m bench.gpu_check --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
