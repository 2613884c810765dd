#!/usr/bin/env bash
# Run here, on a machine with pip and a package index: download, as wheels for the lent GPU
# machine (CPython 3.12, manylinux x86-64), every package in benchmarks/gpu/wheels.txt, the
# ones proof.sh needs that the GPU image lacks, into .gpu-wheels/ (git-ignored; the device
# call carries it by name), and print their sizes. Nothing is installed here.
#
#   bash benchmarks/gpu/prepare.sh        # then: carry [".gpu-wheels"]
set -euo pipefail
cd "$(dirname "$0")/../.."

list=benchmarks/gpu/wheels.txt
folder=.gpu-wheels
limit_mib=16  # what travels with the tree is 64 MiB in all: stay well under it

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list" | grep -v '^$')
rm -rf "$folder" && mkdir -p "$folder"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 \
    -d "$folder" "${wanted[@]}"

count=$(find "$folder" -name '*.whl' | wc -l)
if [ "$count" -ne "${#wanted[@]}" ]; then
    echo "prepare.sh: ${#wanted[@]} packages listed but $count wheels downloaded" >&2
    exit 1
fi
echo "wheels for the GPU machine in $folder/:"
du -b "$folder"/*.whl | sort -n | awk '{printf "  %9.1f KiB  %s\n", $1 / 1024, $2}'
total=$(du -cb "$folder"/*.whl | tail -1 | cut -f1)
awk -v t="$total" -v n="$count" 'BEGIN {printf "total: %d wheels, %.2f MiB (%d bytes)\n", n, t / 1048576, t}'
if [ "$total" -gt $((limit_mib * 1048576)) ]; then
    echo "prepare.sh: more than $limit_mib MiB; at most 64 MiB travels with the tree" >&2
    exit 1
fi
