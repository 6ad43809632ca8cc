#!/usr/bin/env bash
# GPU check for issue 13 (at most 8 minutes): the end-to-end pipeline on a 698 × 192 × 3896
# slab of a paper-size scan, the engine's ratio to MONAI's default at window 512 (bf16), and a
# whole 698 × 1707 × 3896 scan end to end with a segmentation's labels.
#
# Runs on a bare GPU machine that has PyTorch, Lightning and torchmetrics: the packages it
# lacks travel as wheels in bench/wheels/ (git-ignored, about 12 MB). Build them once where pip
# reaches the index, for the GPU machine's Python (3.12 there): `bash bench/gpu_wheels.sh`.
# Then run it there with bench/wheels carried along (the device tool: carry=["bench/wheels"]):
#
#   bash bench/gpu_check.sh            # on the GPU, results in $OUT (or ./gpu_check_out)
#   bash bench/gpu_check.sh --tiny     # a tiny CPU run of the same steps, to check the script
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
# the wheels are for the GPU machine's Python; --tiny runs on this machine's packages
if [ "${1:-}" != "--tiny" ] && compgen -G "bench/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/batteryct-site bench/wheels/*.whl
    export PYTHONPATH="/tmp/batteryct-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
if [ "${1:-}" = "--tiny" ]; then
    pipeline=(--device cpu --shape 64 8 192 --axis rows --window 64 --net resunet7 --slab 4
              --repeats 1)
    engine=(--device cpu --window 64 --slices 2 --repeats 1 --gemm-size 256)
    scan=(--device cpu --shape 64 16 192 --axis rows --window 64 --slab 4)
    limits=(200 100 100)
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
    pipeline=(--device cuda --shape 698 192 3896 --axis rows --window 512 --net resunet7
              --repeats 1)
    engine=(--device cuda --window 512 --slices 32 --repeats 2)
    scan=(--device cuda --shape 698 1707 3896 --axis rows --window 512)
    limits=(170 60 210)
fi
filter() { grep -v -i -E "warning|tip:|available:|treespec"; }
# each step has its own time limit, so that the whole check ends within 8 minutes
# 1. the slab, time split and end to end, random weights (speckled labels: the worst case)
timeout "${limits[0]}" "$python" bench/bench_pipeline.py "${pipeline[@]}" \
    --json "$out/pipeline.json" 2>&1 | filter | tee "$out/pipeline.txt" ||
    echo "end-to-end step failed or ran out of time (see above)"
# 2. the engine against MONAI's default
timeout "${limits[1]}" "$python" bench/bench_predict.py "${engine[@]}" --no-compile --skip-memory \
    2>&1 | tee "$out/engine.txt" || echo "engine step failed or ran out of time (see above)"
# 3. a whole paper-size scan end to end, resunet7's work with a segmentation's labels
timeout "${limits[2]}" "$python" bench/bench_pipeline.py "${scan[@]}" --net resunet7-segmenting \
    --skip-split --repeats 1 --json "$out/scan.json" 2>&1 | filter | tee "$out/scan.txt" ||
    echo "whole-scan step failed or ran out of time (see above)"
