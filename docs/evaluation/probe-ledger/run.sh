#!/bin/sh
# The probe ledger's sweep (docs/scheduling.md, "The probe ledger"): the selector with
# the deploy deadline and the pipelined upload, inquisitor.probe_share = SHARE (0.25),
# over the 24 environments of docs/evaluation/README.md, "The actions on, over every
# environment", 5 seeds x 3 days, one sweep per environment, one niced worker. Its
# informed reference does not learn, so the gaps are taken against the committed
# per-seed figures in docs/evaluation/actions-all/ENV/sweep.json. Then:
#   python docs/evaluation/probe-ledger/tables.py docs/evaluation/probe-ledger/share-25
set -e
SHARE=${SHARE:-0.25}
OUT=${OUT:-docs/evaluation/probe-ledger/share-25}
SEEDS=${SEEDS:-5}
PY=${PY:-.venv/bin/python}
for f in workload/envs/nautilus-2020-real.yaml workload/envs/congested-processing.yaml \
  workload/envs/contended-cloud.yaml workload/envs/deploy-cache-mixture.yaml \
  workload/envs/edge-afternoon-spell.yaml workload/envs/edge-step.yaml \
  workload/envs/fast-cloud.yaml workload/envs/heavy-tail.yaml workload/envs/jetson-edge.yaml \
  workload/envs/leo-satellite.yaml workload/envs/nautilus-2020.yaml workload/envs/pi-edge.yaml \
  workload/envs/rural-lte.yaml workload/envs/turbulent-cloud.yaml \
  docs/evaluation/sweep/envs/random-00[0-9].yaml; do
  n=$(basename "$f" .yaml)
  tmp=$(mktemp -d)
  nice -n 10 "$PY" -m stoic.cli replay sweep --envs "$f" --modes selector+deadline+pipelined \
    --seeds "$SEEDS" --days 3 --jobs 1 --no-progress --probe-share "$SHARE" --report "$tmp"
  mkdir -p "$OUT/$n"
  cp "$tmp/sweep.json" "$OUT/$n/sweep.json"
  rm -r "$tmp"
done
