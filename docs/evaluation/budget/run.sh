#!/bin/sh
# The cloud budget's figures (docs/scheduling.md, "The cloud budget"): five
# environments, 3 seeds x 3 days, one worker, in order of priority (each sweep writes
# its own report, so the first ones stand if the later ones are cut short). Budgets:
# the GPU1 duplicator's mean pod-seconds x GPUs a day over seeds 0-2 in each
# environment, from docs/evaluation/sweep/sweep.json
# (PYTHONPATH=. python docs/evaluation/budget/tables.py --budgets).
# FROM=2 sh run.sh starts at step 2.
set -e
FROM=${FROM:-1}
S="stoic replay sweep --seeds 3 --days 3 --jobs 1 --no-progress"
E=docs/evaluation/sweep/envs
OUT=docs/evaluation/budget
ALL="--envs workload/envs/nautilus-2020-real.yaml --envs workload/envs/heavy-tail.yaml
     --envs $E/random-002.yaml --envs $E/random-004.yaml --envs $E/random-007.yaml"
PAIRS="nautilus-2020-real:workload/envs/nautilus-2020-real.yaml:183428
       heavy-tail:workload/envs/heavy-tail.yaml:299689
       random-002:$E/random-002.yaml:283160
       random-004:$E/random-004.yaml:217247
       random-007:$E/random-007.yaml:253003"
# 1. Share (the best mode without a budget in all five) at the GPU1 duplicator's budget.
if [ "$FROM" -le 1 ]; then
  for pair in $PAIRS; do
    name=${pair%%:*}; rest=${pair#*:}; spec=${rest%%:*}; budget=${rest#*:}
    $S --envs $spec --modes share --budgets $budget --report $OUT/budget-$name
  done
fi
# 2. Probe pricing on, no budget (off: the same cells of docs/evaluation/sweep).
if [ "$FROM" -le 2 ]; then
  $S $ALL --modes selector,informed --probe-pricing --report $OUT/probe-pricing-selector
  $S $ALL --modes duplicator,share --probe-pricing --report $OUT/probe-pricing-race
fi
# 3. The budget with probe pricing on.
if [ "$FROM" -le 3 ]; then
  for pair in $PAIRS; do
    name=${pair%%:*}; rest=${pair#*:}; spec=${rest%%:*}; budget=${rest#*:}
    $S --envs $spec --modes share --budgets $budget --probe-pricing \
       --report $OUT/budget-priced-$name
  done
fi
# 4. A front on the real calibration: selector and share at four budgets, probes priced.
if [ "$FROM" -le 4 ]; then
  $S --envs workload/envs/nautilus-2020-real.yaml --modes selector,share \
     --budgets 20000,40000,80000,none --probe-pricing --report $OUT/front-nautilus-2020-real
fi
