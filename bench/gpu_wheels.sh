#!/usr/bin/env bash
# The wheels that bench/gpu_check.sh carries to a bare GPU machine (PyTorch, Lightning and
# torchmetrics there, not the rest), downloaded into bench/wheels/ (git-ignored, about 12 MB)
# for that machine's Python (default 3.12). Run it here, where pip reaches the package index:
#
#   bash bench/gpu_wheels.sh          # or: bash bench/gpu_wheels.sh 3.11
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-3.12}"
rm -rf bench/wheels
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
    --implementation cp "${platforms[@]}" -d bench/wheels monai==1.6.1 hydra-core==1.3.8 \
    omegaconf==2.3.1 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
# antlr4-python3-runtime 4.9.3 (omegaconf's parser) is published as a source archive only
python3 -m pip wheel -q --no-deps -w bench/wheels antlr4-python3-runtime==4.9.3
ls bench/wheels
