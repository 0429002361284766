#!/usr/bin/env bash
# The AMF-versus-baselines experiments reported in the README (results/experiments/*), in the order
# they were run. Each step is resumable: re-running skips finished (strategy, seed) runs and redoes
# unfinished ones. Run a subset by name, e.g.: bash scripts/experiments.sh image_skewed
#
# Cut to fit 2 CPU cores (README, "Does AMF help?"): least_demonstrated ran on seeds 0-1 of
# state_skewed only (with no skipped tasks it picks exactly what round_robin picks: both take the
# earliest task with the fewest fine-tuning demos); ablations on 2 seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=egl
EXP=.venv/bin/af-experiment
WORKERS=${WORKERS:-2}
STATE_SKEWED=(--out results/experiments/state_skewed --observation state --mix skewed
  --budget 20 --demos-per-round 4 --finetune-steps 1500 --eval-episodes 5 --workers "$WORKERS")
STATE_BALANCED=(--out results/experiments/state_balanced --observation state --mix balanced
  --budget 20 --demos-per-round 4 --finetune-steps 1000 --eval-episodes 4 --workers "$WORKERS")
IMAGE_SKEWED=(--out results/experiments/image_skewed --observation image --image-size 96
  --mix skewed_40 --pretrained checkpoints/pretrained_mt10_skewed --pretraining-demos-per-task 4
  --budget 6 --demos-per-round 2 --finetune-steps 300 --batch-size 64 --eval-episodes 2
  --target-rollouts 1 --max-steps 150 --workers "$WORKERS")
steps=("${@:-state_skewed image_skewed state_balanced state_ablations state_balanced_more}")
for step in ${steps[*]}; do
  case $step in
    state_skewed)   # MT10 state-based, skewed pretraining (5 tasks x 20 demos, 5 with none)
      $EXP "${STATE_SKEWED[@]}" --seeds 2 --strategies least_demonstrated
      $EXP "${STATE_SKEWED[@]}" --seeds 5 --strategies amf,uniform,round_robin,privileged_rebalancing ;;
    state_ablations) # loss-gradient vs last-layer-feature embeddings; adaptive prior vs L2-to-init
      $EXP "${STATE_SKEWED[@]}" --seeds 2 --strategies amf:features,amf:no_prior ;;
    image_skewed)   # from the shipped image checkpoint, AMF vs uniform
      $EXP "${IMAGE_SKEWED[@]}" --seeds 3 --strategies amf,uniform ;;
    state_balanced) # MT10 state-based, balanced pretraining (10 demos of every task)
      $EXP "${STATE_BALANCED[@]}" --seeds 3 --strategies amf,uniform,round_robin ;;
    state_balanced_more)
      $EXP "${STATE_BALANCED[@]}" --seeds 5 --strategies amf,uniform,round_robin
      $EXP "${STATE_BALANCED[@]}" --seeds 5 --strategies least_demonstrated,privileged_rebalancing ;;
    *) echo "unknown experiment step $step" >&2; exit 2 ;;
  esac
done
