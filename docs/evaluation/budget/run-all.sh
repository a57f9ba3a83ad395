#!/bin/sh
# The cloud budget over every environment (docs/evaluation/README.md, "The cloud budget
# over every environment"): the 24 of workload/envs and docs/evaluation/sweep/envs,
# 3 seeds x 3 days, one worker, niced, one sweep per environment (so a partial run keeps
# what it finished), in tables_all.py's order (those no budget figure had measured
# first). Budget B: the GPU1 duplicator's mean pod-seconds x GPUs a day over seeds 0-2,
# from docs/evaluation/sweep/sweep.json where it has the environment, else from step 1.
# Steps 3-4: the same with inquisitor.probe_pricing on everywhere, the budget's GPU1
# duplicator included (all/ENV/priced). Then:
#   PYTHONPATH=. python docs/evaluation/budget/tables_all.py [--priced]
# FROM=2 sh run-all.sh starts at step 2; ONLY="env ..." runs steps 2 and 4 on those alone.
set -e
FROM=${FROM:-1}
STOIC=${STOIC:-.venv/bin/stoic}
S="nice -n 10 $STOIC replay sweep --seeds 3 --days 3 --jobs 1 --no-progress"
OUT=docs/evaluation/budget/all
PYTHON=${PYTHON:-.venv/bin/python}
T="$PYTHON docs/evaluation/budget/tables_all.py"
# 1. The GPU1 duplicator, no budget, where the committed sweep lacks the environment.
if [ "$FROM" -le 1 ]; then
  PYTHONPATH=. $T --budgets | while read -r name spec budget; do
    if [ "$budget" = "-" ]; then
      $S --envs "$spec" --modes duplicator-gpu1 --report "$OUT/$name/gpu1"
    fi
  done
fi
# 2. Share and the selector with the deploy deadline and the pipelined upload at B.
if [ "$FROM" -le 2 ]; then
  PYTHONPATH=. $T --budgets | while read -r name spec budget; do
    if [ -n "${ONLY:-}" ] && ! echo " $ONLY " | grep -q " $name "; then continue; fi
    $S --envs "$spec" --modes share,selector+deadline+pipelined --budgets "$budget" \
      --report "$OUT/$name"
  done
fi
# 3. The GPU1 duplicator with probe pricing on, no budget, everywhere.
if [ "$FROM" -le 3 ]; then
  PYTHONPATH=. $T --priced --budgets | while read -r name spec budget; do
    $S --envs "$spec" --modes duplicator-gpu1 --probe-pricing --report "$OUT/$name/priced/gpu1"
  done
fi
# 4. Share and the selector at that budget, probe pricing on.
if [ "$FROM" -le 4 ]; then
  PYTHONPATH=. $T --priced --budgets | while read -r name spec budget; do
    if [ -n "${ONLY:-}" ] && ! echo " $ONLY " | grep -q " $name "; then continue; fi
    $S --envs "$spec" --modes share,selector+deadline+pipelined --budgets "$budget" \
      --probe-pricing --report "$OUT/$name/priced"
  done
fi
