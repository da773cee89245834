#!/usr/bin/env bash
# The GPU checks in one run, for a machine with one CUDA GPU and PyTorch already installed
# (CI has no GPU, so this is how the CUDA paths get exercised):
#   1. the whole test suite with the GPU visible ("auto" devices resolve to CUDA),
#   2. the training-step throughput (bench/train_step.py --device cuda) and a bf16 matmul peak,
#   3. end-to-end training speed with --workers 0 and auto (30 s each, DSB --task instance),
#   4. a short real-data instance training (bench/dsb_instances.py --budget $BUDGET).
# Each step has its own time cap and log; a failing step does not stop the next.
#
#   OUT=gpu-out BUDGET=2 bash bench/gpu.sh
# Where ../shared/data is missing, a copy in .devdata/ (dsb2018-dev, isbi2012) is linked there;
# Python packages missing on the machine may be given as wheels in .whl/.
set -u
OUT=${OUT:-gpu-out}
BUDGET=${BUDGET:-2}
TEST_CAP=${TEST_CAP:-400}  # the first 40 % of the suite took 150 s on an H100 machine
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
if [ ! -e ../shared/data ] && [ -d .devdata ]; then
    mkdir -p ../shared && ln -sfn "$PWD/.devdata" ../shared/data
fi

step() {  # step NAME CAP COMMAND...: run with a time cap, log to $OUT/NAME.log
    local name=$1 cap=$2
    shift 2
    echo "== $name (cap ${cap}s): $*"
    local t0=$SECONDS
    timeout "$cap" "$@" >"$OUT/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - t0)) s"
    tail -n 25 "$OUT/$name.log"
}

nvidia-smi -L
$PY -c "import torch, unetkit; print('torch', torch.__version__, torch.cuda.get_device_name())"
step peak 60 $PY -c "
import time, torch
a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10): a @ b
torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 10
print(f'bf16 matmul 8192^3: {2 * 8192**3 / dt / 1e12:.0f} TFLOP/s')"
# 8 pytest processes x 2 threads on 16 cores: with torch's default of one thread per core,
# two CPU-bound large-image tests ran past 120 s on an H100 machine (seconds when alone)
OMP_NUM_THREADS=2 step tests "$TEST_CAP" $PY -m pytest -q -n 8 -p no:cacheprovider \
    -p no:benchmark --timeout 150 --durations 15 tests
step train_step 90 $PY bench/train_step.py --device cuda --base-width 32 --batch 16 --steps 20
step train_step_small 60 $PY bench/train_step.py --device cuda --base-width 16 --batch 4 --steps 20
# end-to-end training speed, loading in the training process against the auto workers
for w in 0 -1; do
    step "loop_workers$w" 120 $PY -m unetkit train ../shared/data/dsb2018-dev -o "/tmp/loop$w" \
        --task instance --time-budget 0.5 --workers "$w" --overwrite
    echo "images/s in the loop, last epochs (--workers $w):"
    tail -n 3 "/tmp/loop$w/history.csv" | cut -d, -f1,4
done
step dsb_instances $((BUDGET * 60 + 150)) $PY bench/dsb_instances.py --budget "$BUDGET" \
    --recipes instance --out /tmp/dsbi --json "$OUT/dsb_instances.json"
cp /tmp/dsbi/instance/history.csv "$OUT/dsbi_history.csv" 2>/dev/null
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
