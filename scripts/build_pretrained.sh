#!/usr/bin/env bash
# Rebuilds the shipped digits model and its RBE schedules (about 35 min on a 2-core CPU).
#   bash scripts/build_pretrained.sh [WORKDIR]
# Training resumes from WORKDIR if it was interrupted; the EMA weights are exported into the
# package, then RBE schedules are calibrated for NFE 5, 8, 10, 15, 20 (256 noise samples each).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/digits}
dest=rbe_jax/zoo/pretrained/digits
rbe-jax train --workdir "$work" --steps 10000 --batch-size 64 --lr 2e-3 --seed 0 --export "$dest"
mkdir -p "$dest/schedules"
for n in 5 8 10 15 20; do
  rbe-jax calibrate --checkpoint "$dest" --nfe "$n" --n 256 --seed 1234 --out "$dest/schedules/rbe_nfe$n.json"
done
