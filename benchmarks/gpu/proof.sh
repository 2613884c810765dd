#!/usr/bin/env bash
# The GPU proof in one call (benchmarks/README.md): on a lent GPU machine, from the repository
# root, with .gpu-wheels/ carried (benchmarks/gpu/prepare.sh makes it):
#
#   OUT=dir bash benchmarks/gpu/proof.sh           # about 6 minutes; writes dir/gpu_proof.json
#                                                  # and dir/gpu_proof.md
#   OUT=dir bash benchmarks/gpu/proof.sh --smoke   # the same code paths on the CPU, tiny shapes,
#                                                  # under a minute (CI runs it)
#   OUT=dir bash benchmarks/gpu/proof.sh --parts steps   # a rerun of some parts (heads, resume,
#                                                        # steps); the last takes what is left
#
# It installs the wheels into a temporary folder (no network, no pip install -e), puts src/ on
# the path and runs benchmarks/gpu/proof.py, which checks the GPU and runs each part under its
# own time cap. Exit status: 0 when every part ran or was skipped with a reason, 1 when a
# check failed or a part broke, 2 when there is no GPU (without --smoke) or no wheels.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python=${PYTHON:-python3}
smoke=0
for arg in "$@"; do
    if [ "$arg" = "--smoke" ]; then smoke=1; fi
done
OUT=${OUT:-$(mktemp -d -t gpu-proof-out.XXXXXX)}
mkdir -p "$OUT"
work=$(mktemp -d -t gpu-proof.XXXXXX)
trap 'rm -rf "$work"' EXIT

path="$root/src:$root/benchmarks:$root/benchmarks/gpu"
if [ "$smoke" = 0 ]; then
    # the lent machine's python3 lacks these (benchmarks/gpu/wheels.txt)
    if ! compgen -G ".gpu-wheels/*.whl" >/dev/null; then
        echo "proof.sh: no .gpu-wheels/: run benchmarks/gpu/prepare.sh here and carry it" >&2
        exit 2
    fi
    echo "installing $(ls .gpu-wheels/*.whl | wc -l) wheels from .gpu-wheels/ into $work/site"
    if "$python" -m pip --version >/dev/null 2>&1; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --disable-pip-version-check --target "$work/site" .gpu-wheels/*.whl
    else  # no pip there: a wheel is a zip of what goes into site-packages
        "$python" -c 'import sys, zipfile
for wheel in sys.argv[2:]: zipfile.ZipFile(wheel).extractall(sys.argv[1])' \
            "$work/site" .gpu-wheels/*.whl
    fi
    path="$work/site:$path"
fi
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$python" benchmarks/gpu/proof.py --out "$OUT" --work "$work" "$@"
