#!/usr/bin/env bash
# The GPU rows of the benchmarks in one run, for a machine with one NVIDIA GPU and a Python
# that has torch (CUDA), scipy, scikit-image, scikit-learn, tifffile and safetensors (the
# H100/H200 image has them all; nothing is installed). Each bench has its own time limit
# (120 + 160 + 150 + 100 s), so the run ends within about 10 minutes; not yet run on a GPU.
#
# The data travel with the working tree (.gpudata is git-ignored, so it must be carried). Once, in the checkout:
#   mkdir -p .gpudata && cp -r ../shared/data/isbi2012 ../shared/data/dsb2018 .gpudata/
# then run `bash bench/gpu_rows.sh [DATA_DIR]` on the GPU machine (DATA_DIR defaults to .gpudata).
# Everything printed also lands in OUT_DIR (default /tmp/gpu_rows): gpu_rows.log, and the ISBI rows as JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
data="${1:-$PWD/.gpudata}"   # bash bench/gpu_rows.sh [DATA_DIR [DEVICE [OUT_DIR]]]
device="${2:-cuda}"           # cpu checks the wiring here (slowly)
out="${3:-/tmp/gpu_rows}"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
mkdir -p "$out"
python=$(command -v python3 || command -v python)
log="$out/gpu_rows.log"

step() {  # step SECONDS NAME COMMAND...: run with a time limit, log it, go on after a failure
    local limit=$1 name=$2
    shift 2
    echo "== $name: $*" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$log"

# 3 slices of strokes, 30 s on the GPU, with the forest in the same table (held-out slices
# 10-19); the default (small) network and the large one, which learnt less from strokes on the CPU.
step 120 isbi-strokes "$python" bench/strokes_isbi.py --data "$data" --budget 30 --slices-train 3 --device "$device" \
    --methods random-forest unet unet-large --variant unet-large '{"preset": "large"}' \
    --json "$out/isbi_strokes.json"
# dense labels (slices 0-9 stand in for the 20 of the full challenge; held out 10-19), U-Net only.
step 160 isbi-dense "$python" bench/strokes_isbi.py --data "$data" --dense --slices-train 10 --budget 120 --methods unet \
    --device "$device" --json "$out/isbi_dense.json"
# DSB 2018 nuclei from full masks, AP@0.5 (target >= 0.85 on a GPU).
step 150 dsb-dense "$python" bench/objects_dsb.py --data "$data" --dense --budget 120 --methods unet-objects --device "$device"
# speed on the GPU (bare step vs loop, MFU, predict vs forward on 4096²).
step 100 speed "$python" bench/speed.py --device "$device" --big 0
