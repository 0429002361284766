#!/usr/bin/env bash
# The AMF-versus-baselines experiments reported in the README (results/experiments/*), in the order
# they were run. Each step is resumable: re-running skips finished (strategy, seed) runs and redoes
# unfinished ones. Run a subset by name, e.g.: bash scripts/experiments.sh image_skewed
#
# Seeds: the three main strategies on 8 seeds, the other baselines and the ablations on 5 (run in
# this order; what did not fit in a session is said in the README, "Does AMF help?").
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
  --mix skewed_100 --pretrained checkpoints/pretrained_mt10_skewed --pretraining-demos-per-task 4
  --budget 12 --demos-per-round 2 --finetune-steps 600 --batch-size 64 --eval-episodes 5
  --target-rollouts 1 --max-steps 150 --workers "$WORKERS")
steps=("${@:-state_skewed state_skewed_more state_balanced state_balanced_more image_skewed}")
for step in ${steps[*]}; do
  case $step in
    state_skewed)   # MT10 state-based, skewed pretraining (5 tasks x 20 demos, 5 with none)
      $EXP "${STATE_SKEWED[@]}" --seeds 8 --strategies amf,uniform,privileged_rebalancing ;;
    state_skewed_more) # other baselines; loss-gradient vs features; adaptive prior vs L2-to-pi0
      $EXP "${STATE_SKEWED[@]}" --seeds 5 \
        --strategies round_robin,least_demonstrated,amf:features,amf:l2,uniform:l2 ;;
    state_balanced) # MT10 state-based, balanced pretraining (10 demos of every task)
      $EXP "${STATE_BALANCED[@]}" --seeds 8 --strategies amf,uniform,privileged_rebalancing ;;
    state_balanced_more)
      $EXP "${STATE_BALANCED[@]}" --seeds 5 \
        --strategies round_robin,least_demonstrated,amf:features,amf:l2,uniform:l2 ;;
    image_skewed)   # from the shipped image checkpoint: AMF vs uniform first, then the baseline
      $EXP "${IMAGE_SKEWED[@]}" --seeds 5 --strategies amf,uniform
      $EXP "${IMAGE_SKEWED[@]}" --seeds 5 --strategies amf,uniform,privileged_rebalancing ;;
    *) echo "unknown experiment step $step" >&2; exit 2 ;;
  esac
done
