#!/usr/bin/env bash
# Runs the SB3-contrib TRPO learning benchmarks one after another: never two at once, since
# the machine's two cores are shared. A run whose result file already says "finished" is
# skipped, so starting the script again resumes the sequence.
#
#   nohup benchmarks/peers/run_sb3_learn.sh >/dev/null 2>&1 &
#   tail benchmarks/peers/logs/driver.log            # one line per start / end
#   ls benchmarks/results/sb3_learn_*.json           # rewritten after every evaluation
#
# Runs are niced (wall-clock figures in these files are not speed benchmarks; use `steps`).
set -u
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
LOG_DIR=benchmarks/peers/logs
mkdir -p "$LOG_DIR"

exec 9>"$LOG_DIR/driver.lock"
if ! flock -n 9; then
    echo "another run_sb3_learn.sh is running (lock $LOG_DIR/driver.lock)" >&2
    exit 1
fi
echo "$(date -u +%FT%TZ) driver pid $$" >>"$LOG_DIR/driver.log"

# env  seed  evaluation every N steps
RUNS=(
    "CartPole-v1 0 10000" "CartPole-v1 1 10000" "CartPole-v1 2 10000"
    "Pendulum-v1 0 10000" "Pendulum-v1 1 10000" "Pendulum-v1 2 10000"
    "HalfCheetah-v5 0 50000" "Hopper-v5 0 50000"
    "HalfCheetah-v5 1 50000" "Hopper-v5 1 50000"
    "HalfCheetah-v5 2 50000" "Hopper-v5 2 50000"
)

for spec in "${RUNS[@]}"; do
    read -r env seed every <<<"$spec"
    out="benchmarks/results/sb3_learn_${env}_seed${seed}.json"
    if grep -q '"status": "finished"' "$out" 2>/dev/null; then
        continue
    fi
    echo "$(date -u +%FT%TZ) start $env seed $seed" >>"$LOG_DIR/driver.log"
    nice -n 10 "$PY" benchmarks/peers/sb3_trpo.py learn "$env" --seed "$seed" \
        --eval-freq "$every" >"$LOG_DIR/${env}_seed${seed}.log" 2>&1
    echo "$(date -u +%FT%TZ) end $env seed $seed exit $?" >>"$LOG_DIR/driver.log"
done
echo "$(date -u +%FT%TZ) driver done" >>"$LOG_DIR/driver.log"
