#!/usr/bin/env bash
# The prepared device check for a session lent an NVIDIA GPU (15 minutes of device time, at most
# 10 per call): what is still unmeasured on a GPU, most important first, each part under its own
# timeout (560 s in all), every log and result written to $OUT (else benchmarks/results).
#
#   bash benchmarks/gpu_session.sh
#
# 1. benchmarks.gpu --quick: the smoke test (padding, PyTorch parity, gradients of every path,
#    the Pallas loop included) and S1, S3, S5 with the jaxrnn[loop=pallas] rows (issue #18);
# 2. benchmarks.pallas_tune: the Pallas loop's launch parameters on S4 and S1 (issue #18);
# 3. benchmarks.parallel: minGRU associative vs sequential vs GRU against T, the 'auto' rule
#    for GPU (issue #17);
# 4. benchmarks.packed: packed rows against padded batches on the GPU (issue #16).
set -u
out=${OUT:-benchmarks/results}
mkdir -p "$out"
{ nvidia-smi -L; python -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())'; } \
  > "$out/device.txt" 2>&1
cat "$out/device.txt"

run() {
  local limit=$1 name=$2
  shift 2
  echo "== $name (at most $limit s)"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "rc=$?" >> "$out/$name.log"
  tail -n 4 "$out/$name.log"
}

run 200 gpu python -m benchmarks.gpu --quick --budget-s 150 --out "$out"
run 150 pallas_tune python -m benchmarks.pallas_tune --shapes S4-lstm,S1 --budget-s 100 --out "$out"
run 120 parallel python -m benchmarks.parallel
run 90 packed python -m benchmarks.packed --rounds 2 --no-autodiff
