#!/usr/bin/env bash
# The main job: simulate RecFlow-shaped cascade logs -> TFX pipeline (Beam preprocessing,
# statistics/schema/validation, cascade training, joint-recall validation and blessing,
# atomic push of the serving SavedModel) -> a printed summary -> a quick operator benchmark.
#
# Usage: scripts/demo.sh [OUT_DIR]   (env: PRESET=small, LOSS=dftopk, STAGES=2, VENV=.venv)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo_out}
PRESET=${PRESET:-small}
LOSS=${LOSS:-dftopk}
STAGES=${STAGES:-2}
PY=${VENV:-.venv}/bin/python
export PYTHONUNBUFFERED=1

step() { printf '\n==> %s\n' "$*"; }

mkdir -p "$OUT"
step "1/3 simulate the '$PRESET' preset in the RecFlow layout -> $OUT/recflow"
"$PY" -m tfcascade simulate --preset "$PRESET" --seed 0 --out "$OUT/recflow"

step "2/3 TFX pipeline: Beam preprocessing -> StatisticsGen -> SchemaGen -> ExampleValidator -> Trainer ($LOSS, $STAGES stages) -> JointRecallValidator -> Pusher"
"$PY" -m tfcascade pipeline run --data "$OUT/recflow" --pipeline-root "$OUT/pipeline" \
  --serving-dir "$OUT/serving" --loss "$LOSS" --stages "$STAGES" --batch-size 256 --epochs 3

step "3/3 differentiable top-K operators, quick benchmark"
"$PY" -m tfcascade bench topk --quick --out "$OUT/bench"

printf '\nDone. Artifacts in %s (TensorBoard: %s -m tensorboard.main --logdir %s/pipeline)\n' "$OUT" "$PY" "$OUT"
