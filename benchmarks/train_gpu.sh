#!/usr/bin/env bash
# Trains the committed `small` checkpoints (and the `paper` size, for its numbers) on one CUDA GPU in one run.
# Usage: benchmarks/train_gpu.sh FEATURES.npz OUTDIR [SCALE]
#   FEATURES.npz from `c2d features -o FEATURES.npz`; SCALE multiplies every time budget (default 1).
# The jobs share the GPU: classifiers first, then the subnetworks on them; the U-Nets run throughout.
set -euo pipefail
FEAT=$1; OUT=$2; SCALE=${3:-1}
C2D=${C2D:-"python -m c2d"}
DEVICE=${DEVICE:-cuda}; SMALL=${SMALL:-small}; PAPER=${PAPER:-paper}  # overridable for a CPU dry run
mkdir -p "$OUT/release" "$OUT/logs"
minutes() { python -c "print(round($1 * $SCALE, 3))"; }
run() {  # name kind size minutes batch [extra args]
  local name=$1 kind=$2 size=$3 mins=$4 batch=$5; shift 5
  $C2D train "$kind" --size "$size" --device "$DEVICE" --features "$FEAT" --fresh --steps 40000 --batch-size "$batch" \
    --time-limit "$(minutes "$mins")" -o "$OUT/$name.pt" --release "$OUT/release/$name.pt" "$@" \
    > "$OUT/logs/$name.out" 2>&1
}
run classifier-small classifier "$SMALL" 2.3 128 & a=$!
run classifier-paper classifier "$PAPER" 2.3 64 & b=$!
run unet-small unet "$SMALL" 6.5 128 & c=$!
run unet-paper unet "$PAPER" 6.5 64 & d=$!
wait $a $b
run subnet-small subnet "$SMALL" 4.0 128 --classifier "$OUT/classifier-small.pt" & e=$!
run subnet-small-notaps subnet "$SMALL" 4.0 128 --classifier "$OUT/classifier-small.pt" --no-gradient-taps & f=$!
run subnet-paper subnet "$PAPER" 4.0 64 --classifier "$OUT/classifier-paper.pt" & g=$!
wait $c $d $e $f $g
cp "$OUT"/*.pt.log "$OUT/logs/"
python -m c2d.benchmarks.classifier_accuracy "$OUT/classifier-small.pt" "$OUT/classifier-paper.pt" \
  --features "$FEAT" --device "$DEVICE" --json "$OUT/classifier_accuracy.json"
python -m c2d.benchmarks.reference_samples --device "$DEVICE" -o "$OUT/samples.npz" \
  --subnet "$OUT/release/subnet-small.pt" --subnet "$OUT/release/subnet-small-notaps.pt" \
  --unet "$OUT/release/unet-small.pt" --classifier "$OUT/release/classifier-small.pt" | tee "$OUT/samples.json"
