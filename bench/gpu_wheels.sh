#!/usr/bin/env bash
# Fetch the wheels bench/gpu_check.sh installs on the device machine, whose image lacks PyAV and open_clip_torch
# (and ftfy, wcwidth): CPython 3.12, x86-64 Linux, the versions the CPU tests run with. They land in .whl at the
# repository root, which .git/info/exclude keeps out of git; a device run names .whl in its carry (37 MiB of
# the 64 MiB a run may carry). See docs/PERFORMANCE.md ("The GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p "$(git rev-parse --git-dir)/info"
exclude="$(git rev-parse --git-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
"${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    av==18.1.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
