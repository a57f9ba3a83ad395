#!/bin/sh
# The cloud budget's figures (docs/scheduling.md, "The cloud budget"): five
# environments, 3 seeds x 3 days, one worker. Budgets: the GPU1 duplicator's mean
# pod-seconds x GPUs a day over seeds 0-2 in each environment, from
# docs/evaluation/sweep/sweep.json (python docs/evaluation/budget/tables.py --budgets).
set -e
S="stoic replay sweep --seeds 3 --days 3 --jobs 1 --no-progress"
E=docs/evaluation/sweep/envs
OUT=docs/evaluation/budget
# Probe pricing on, no budget (off: the same cells of docs/evaluation/sweep).
$S --envs workload/envs/nautilus-2020-real.yaml --envs workload/envs/heavy-tail.yaml \
   --envs $E/random-002.yaml --envs $E/random-004.yaml --envs $E/random-007.yaml \
   --modes selector,duplicator,duplicator-gpu1,share,informed --probe-pricing \
   --report $OUT/probe-pricing
# The budget equal to the GPU1 duplicator's, probe pricing off and on.
for pair in nautilus-2020-real:workload/envs/nautilus-2020-real.yaml:183428 \
            heavy-tail:workload/envs/heavy-tail.yaml:299689 \
            random-002:$E/random-002.yaml:283160 \
            random-004:$E/random-004.yaml:217247 \
            random-007:$E/random-007.yaml:253003; do
  name=${pair%%:*}; rest=${pair#*:}; spec=${rest%%:*}; budget=${rest#*:}
  $S --envs $spec --modes selector,duplicator,share --budgets $budget \
     --report $OUT/budget-$name
  $S --envs $spec --modes selector,duplicator,share --budgets $budget --probe-pricing \
     --report $OUT/budget-priced-$name
done
