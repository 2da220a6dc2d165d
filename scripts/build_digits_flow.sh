#!/usr/bin/env bash
# Rebuilds the shipped rectified-flow digits model and its schedules (about 30 min of
# training plus 40 min of schedules on a 2-core CPU).
#   bash scripts/build_digits_flow.sh [WORKDIR]
# Training resumes from WORKDIR if it was interrupted; the EMA weights are exported into the
# package, then scripts/ship_flow_schedules.py calibrates RBE and optimized UniPC schedules for
# NFE 5, 8, 10, 15, 20 (256 noise samples) and checks them on 256 held-out samples.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/digits_flow}
rbe-jax train --workdir "$work" --objective flow --steps 10000 --batch-size 64 --lr 2e-3 --seed 0 --export rbe_jax/zoo/pretrained/digits_flow
python scripts/ship_flow_schedules.py
