#!/usr/bin/env bash
# The README's main command: install what is missing (idempotent), then run the full active
# fine-tuning loop in simulation (all nodes over ROS 2, scripted operator, shipped checkpoint).
# Extra arguments go to the loop (see `.venv/bin/af-main-job --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=egl
exec .venv/bin/python -m active_finetune.commands.main_job "$@"
