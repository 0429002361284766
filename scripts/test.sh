#!/usr/bin/env bash
# The README's test command: install what is missing (idempotent), then run the test suite.
# Fails loudly when pytest collected nothing (its exit 5). Extra arguments go to pytest
# (e.g. --runslow for the slow fault tests too).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export MUJOCO_GL=egl
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests - failing" >&2
  exit 1
fi
exit $rc
