#!/usr/bin/env bash
# Rebuilds sample_data/intr_tiny_synthetic.safetensors, the bundled default model, from
# synthetic specimens only (no download). Run from the repository root in an environment where
# napari-intr is installed. Takes a few minutes on a laptop CPU (see sample_data/README.md).
set -euo pipefail
work=${1:-build-default-model}
mkdir -p "$work"
intr synth --out "$work/synth-train" --per-class 60 --size 128 --seed 0
# One thread per process keeps OpenMP from spinning against other work on small machines.
# The tiny recipe (README "Recipes") the bundled file was built with on 2026-12-01
# (sample_data/README.md), spelled out since the default became batch 16 at 1.77e-4 (issue 27);
# another machine or torch version may not give the same bytes.
OMP_NUM_THREADS=1 intr train --data "$work/synth-train" --out "$work/run" --backbone tiny \
    --epochs 25 --seed 0 --progress none --batch-size 32 --lr 2.5e-4 --lr-backbone 2.5e-4
cp "$work/run/model.safetensors" sample_data/intr_tiny_synthetic.safetensors
# Accuracy on specimens it has never seen, drawn with another seed.
intr synth --out "$work/synth-test" --per-class 30 --size 128 --seed 1
intr eval --model sample --data "$work/synth-test"
