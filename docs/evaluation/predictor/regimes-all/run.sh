#!/bin/sh
# The replays behind docs/predictor.md, "Every regime option together". The sweep takes
# its settings from the environment: regimes-all.toml's, one STOIC_PREDICTOR__ variable
# each ("all-but-tail": without deployment_tail_history; "all-but-tail-and-shape":
# without processing_shape_history too). Reports go to $OUT (default /tmp/regimes-all);
# compare.py prints the tables from them. About an hour on this 2-core machine.
set -e
OUT=${OUT:-/tmp/regimes-all}
P=STOIC_PREDICTOR__
BUT_TAIL_AND_SHAPE="${P}PROCESSING_MAX_AGE_S=86400 ${P}PROCESSING_CHANGE_DETECTION=true
  ${P}PROCESSING_CHANGE_MIN_RUN=2 ${P}PROCESSING_CHANGE_HAZARD=0.02
  ${P}DEPLOYMENT_COLD_RATIO=5 ${P}DEPLOYMENT_MIXTURE_HISTORY=60
  ${P}PROCESSING_TIME_OF_DAY=true ${P}PROCESSING_TIME_OF_DAY_MIN_DAYS=1"
BUT_TAIL="$BUT_TAIL_AND_SHAPE ${P}PROCESSING_SHAPE_HISTORY=100"
ALL="$BUT_TAIL ${P}DEPLOYMENT_TAIL_HISTORY=1440"
sweep() {  # sweep REPORT SEEDS SETTINGS ENVS...
  report=$1 seeds=$2 settings=$3; shift 3
  envs=""; for e in "$@"; do envs="$envs --envs $e"; done
  env $settings .venv/bin/stoic replay sweep $envs --modes selector,informed \
    --seeds "$seeds" --days 3 --jobs 2 --no-progress --report "$OUT/$report"
}
# Every environment of the committed sweep (its selector and informed cells are the default's).
sweep sweep 5 "$ALL" workload/envs docs/evaluation/sweep/envs
sweep sweep-without-tail 5 "$BUT_TAIL" workload/envs docs/evaluation/sweep/envs
# The selector with issue 23's actions and its informed reference of the same actions
# (docs/evaluation/README.md, "The actions on, over every environment", is the default's).
env $ALL .venv/bin/stoic replay sweep --envs workload/envs --envs docs/evaluation/sweep/envs \
  --modes selector+deadline+pipelined,informed+deadline+pipelined --seeds 5 --days 3 \
  --jobs 2 --no-progress --report "$OUT/actions"
env $ALL .venv/bin/stoic replay sweep --envs workload/envs --envs docs/evaluation/sweep/envs \
  --modes duplicator+deadline --seeds 5 --days 3 --jobs 2 --no-progress \
  --report "$OUT/duplicator"
env $ALL .venv/bin/stoic replay sweep --envs workload/envs --envs docs/evaluation/sweep/envs \
  --modes selector+deadline+pipelined,informed+deadline+pipelined --probe-share 0.25 \
  --seeds 5 --days 3 --jobs 2 --no-progress --report "$OUT/probe-ledger"
# Seeds 5-24 of the four environments added for the predictor, as
# docs/evaluation/sweep-seeds/new4 holds them for the default.
W=workload/envs
env $ALL .venv/bin/stoic replay sweep --envs $W/deploy-cache-mixture.yaml \
  --envs $W/edge-afternoon-spell.yaml --envs $W/edge-step.yaml --envs $W/turbulent-cloud.yaml \
  --modes selector,informed --first-seed 5 --seeds 20 --days 3 --jobs 2 --no-progress \
  --report "$OUT/new4-seeds-5-24"
for env in edge-afternoon-spell:spell-30 nautilus-2020-real:nautilus-real-30; do
  spec=workload/envs/${env%%:*}.yaml dir=${env#*:}
  sweep "$dir/default" 30 "" "$spec"
  sweep "$dir/all" 30 "$ALL" "$spec"
  sweep "$dir/all-but-tail" 30 "$BUT_TAIL" "$spec"
  sweep "$dir/all-but-tail-and-shape" 30 "$BUT_TAIL_AND_SHAPE" "$spec"
done
