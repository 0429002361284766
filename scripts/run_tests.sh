#!/usr/bin/env bash
# Run the test suite; fail loudly when pytest collected nothing (exit 5).
set -uo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=egl
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "run_tests: pytest collected no tests - failing" >&2
  exit 1
fi
exit $rc
