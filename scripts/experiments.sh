#!/usr/bin/env bash
# The AMF-versus-baselines experiments reported in the README (results/experiments/*).
# Each is resumable: re-running skips finished (strategy, seed) runs and continues unfinished ones.
# Pass a subset by name: bash scripts/experiments.sh state_skewed image_skewed state_balanced
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=egl
EXP=.venv/bin/af-experiment
ALL="amf,uniform,round_robin,least_demonstrated,privileged_rebalancing"
WORKERS=${WORKERS:-2}
for name in "${@:-state_skewed image_skewed state_balanced}"; do
  for one in $name; do
    case $one in
      state_skewed)   # MT10 state-based, skewed pretraining, all strategies + the two AMF ablations
        $EXP --out results/experiments/state_skewed --observation state --mix skewed --seeds 5 \
          --budget 20 --demos-per-round 4 --finetune-steps 1500 --eval-episodes 5 \
          --strategies "$ALL,amf:features,amf:no_prior" --workers "$WORKERS" ;;
      state_balanced) # MT10 state-based, balanced pretraining, all strategies
        $EXP --out results/experiments/state_balanced --observation state --mix balanced --seeds 5 \
          --budget 20 --demos-per-round 4 --finetune-steps 1000 --eval-episodes 4 \
          --strategies "$ALL" --workers "$WORKERS" ;;
      image_skewed)   # MT10 image-based from the shipped checkpoint, AMF vs uniform (cut to fit 2 cores)
        $EXP --out results/experiments/image_skewed --observation image --image-size 96 \
          --mix skewed_40 --pretrained checkpoints/pretrained_mt10_skewed \
          --pretraining-demos-per-task 4 --seeds 3 --budget 6 --demos-per-round 2 \
          --finetune-steps 300 --batch-size 64 --eval-episodes 2 --target-rollouts 1 \
          --max-steps 150 --strategies amf,uniform --workers "$WORKERS" ;;
      *) echo "unknown experiment $one" >&2; exit 2 ;;
    esac
  done
done
