#!/bin/sh
# Deployment probes at about the pod time a 25 % ledger would leave them: the ledger on
# processing probes (inquisitor.probe_share = 0.25) and the inquisitor's tick at an hour
# instead of a minute (STOIC_INQUISITOR__PERIOD_S, read by Settings), with a 3-hour
# warm-up (3 ticks; the default is 200 ticks of a minute). Selector with the deploy
# deadline and the pipelined upload, 5 seeds x 3 days, one niced worker. Then:
#   python docs/evaluation/probe-ledger/tables.py docs/evaluation/probe-ledger/hourly
set -e
OUT=${OUT:-docs/evaluation/probe-ledger/hourly}
PY=${PY:-.venv/bin/python}
for f in workload/envs/nautilus-2020-real.yaml workload/envs/congested-processing.yaml \
  workload/envs/heavy-tail.yaml workload/envs/jetson-edge.yaml \
  docs/evaluation/sweep/envs/random-004.yaml docs/evaluation/sweep/envs/random-009.yaml; do
  n=$(basename "$f" .yaml)
  tmp=$(mktemp -d)
  STOIC_INQUISITOR__PERIOD_S=3600 nice -n 10 "$PY" -m stoic.cli replay sweep --envs "$f" \
    --modes selector+deadline+pipelined --seeds 5 --days 3 --jobs 1 --no-progress \
    --probe-share 0.25 --warmup-periods 3 --report "$tmp"
  mkdir -p "$OUT/$n"
  cp "$tmp/sweep.json" "$OUT/$n/sweep.json"
  rm -r "$tmp"
done
