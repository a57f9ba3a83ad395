#!/bin/sh
# The actions sweep of docs/evaluation/README.md, "The actions on, over every
# environment": one sweep per environment (so a partial run keeps what it finished),
# 5 seeds x 3 days, one worker, niced. Then:
#   python docs/evaluation/actions-all/tables.py docs/evaluation/actions-all
set -e
M=selector+deadline+pipelined,informed+deadline+pipelined,duplicator+deadline,share
for f in workload/envs/nautilus-2020-real.yaml docs/evaluation/sweep/envs/random-004.yaml \
  workload/envs/heavy-tail.yaml docs/evaluation/sweep/envs/random-002.yaml \
  docs/evaluation/sweep/envs/random-007.yaml docs/evaluation/sweep/envs/random-003.yaml \
  docs/evaluation/sweep/envs/random-000.yaml docs/evaluation/sweep/envs/random-001.yaml \
  docs/evaluation/sweep/envs/random-005.yaml docs/evaluation/sweep/envs/random-006.yaml \
  docs/evaluation/sweep/envs/random-008.yaml docs/evaluation/sweep/envs/random-009.yaml \
  workload/envs/congested-processing.yaml workload/envs/contended-cloud.yaml \
  workload/envs/fast-cloud.yaml workload/envs/jetson-edge.yaml workload/envs/leo-satellite.yaml \
  workload/envs/nautilus-2020.yaml workload/envs/pi-edge.yaml workload/envs/rural-lte.yaml \
  workload/envs/deploy-cache-mixture.yaml workload/envs/edge-afternoon-spell.yaml \
  workload/envs/edge-step.yaml workload/envs/turbulent-cloud.yaml; do
  n=$(basename "$f" .yaml)
  nice -n 10 .venv/bin/stoic replay sweep --envs "$f" --modes "$M" --seeds 5 --days 3 \
    --jobs 1 --no-progress --report "docs/evaluation/actions-all/$n"
done
