#!/usr/bin/env bash
# `make run`: the whole loop on this machine, in one command.
#
# Ensures Postgres and RabbitMQ, builds the binaries, migrates the demo database, starts
# the simulator (playing the centralized system), the ingress, the persister, the
# submitter and the operator console on local ports with their logs under
# run/<timestamp>/, enqueues examples/demo-campaign.csv, shows the batches filling up
# until they are complete, prints the final table and the console's URL and sign-in
# token, and keeps everything running until Ctrl-C, which stops exactly the processes it
# started. The demo's settings stay in run/<timestamp>/callbridge.env (run/latest.env
# links to the newest), so the CLI can be pointed at it:
#   set -a; . run/latest.env; set +a; target/debug/callbridge batches
#
#   scripts/run-local.sh                     # interactive demo
#   scripts/run-local.sh --exit-when-done    # stop once the batches are complete (CI)
#   scripts/run-local.sh path/to/other.csv   # another campaign
#
# Ports (override with the variables): INGRESS_PORT 8080, SIM_PORT 8090, PERSISTER_PORT
# 9101, SUBMITTER_PORT 9102, CONSOLE_PORT 9103; CALLBRIDGE_CONSOLE_TOKEN chooses the
# console's token (default: a fresh random one). Database: CLIENT_CALLING_DB_URL, default
# postgres://postgres@127.0.0.1:5432/callbridge_demo. RUN_LOCAL_DIR (default run) holds
# the runs' directories and latest.env.
set -euo pipefail
cd "$(dirname "$0")/.."

exit_when_done=0
csv=examples/demo-campaign.csv
for arg in "$@"; do
  case "$arg" in
    --exit-when-done) exit_when_done=1 ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run-local: unknown option $arg (try --help)" >&2; exit 2 ;;
    *) csv=$arg ;;
  esac
done
[ -r "$csv" ] || { echo "run-local: cannot read $csv" >&2; exit 2; }

INGRESS_PORT=${INGRESS_PORT:-8080}
SIM_PORT=${SIM_PORT:-8090}
PERSISTER_PORT=${PERSISTER_PORT:-9101}
SUBMITTER_PORT=${SUBMITTER_PORT:-9102}
CONSOLE_PORT=${CONSOLE_PORT:-9103}
TIMEOUT_SECS=${RUN_LOCAL_TIMEOUT_SECS:-180}

say() { printf '\033[1mrun-local:\033[0m %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "$INGRESS_PORT" "$SIM_PORT" "$PERSISTER_PORT" "$SUBMITTER_PORT" "$CONSOLE_PORT"; do
  port_open "$port" && die "port $port is already in use (another make run?): stop it, or set INGRESS_PORT/SIM_PORT/PERSISTER_PORT/SUBMITTER_PORT/CONSOLE_PORT"
done

say "checking Postgres and RabbitMQ"
scripts/ensure-services.sh

say "building"
cargo build --quiet -p callbridge-cli -p callbridge-ingress -p callbridge-persister \
  -p callbridge-submitter -p callbridge-sim -p callbridge-console --bins
bin=${CARGO_TARGET_DIR:-target}/debug

runs=${RUN_LOCAL_DIR:-run}
run_dir=$runs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$run_dir"

# One configuration for every process: the guide's variables, pointed at the simulator.
export CLIENT_CALLING_DB_URL=${CLIENT_CALLING_DB_URL:-postgres://postgres@127.0.0.1:5432/callbridge_demo}
export RABBITMQ_URL=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export CENTRALIZED_CALLING_BASE_URL=http://127.0.0.1:$SIM_PORT
export CENTRALIZED_CALLING_API_KEY=demo-api-key
export CENTRALIZED_CALLING_CALLBACK_URL=http://127.0.0.1:$INGRESS_PORT/callback
export CENTRALIZED_CALLING_ACCOUNT_CODE=DEMO001
export CALLBACK_SECRET_KEY=demo-callback-secret
export INGRESS_BIND=127.0.0.1:$INGRESS_PORT
export PERSISTER_BIND=127.0.0.1:$PERSISTER_PORT
export SUBMITTER_BIND=127.0.0.1:$SUBMITTER_PORT
export SIM_BIND=127.0.0.1:$SIM_PORT
export CONSOLE_BIND=127.0.0.1:$CONSOLE_PORT
# The console: a fresh operator token per run (unless given), plain HTTP on loopback.
export CALLBRIDGE_CONSOLE_TOKEN=${CALLBRIDGE_CONSOLE_TOKEN:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}
export CALLBRIDGE__CONSOLE__SECURE_COOKIE=false
export CALLBRIDGE__CONSOLE__SERVICES="ingress=http://127.0.0.1:$INGRESS_PORT,persister=http://127.0.0.1:$PERSISTER_PORT,submitter=http://127.0.0.1:$SUBMITTER_PORT,simulator=http://127.0.0.1:$SIM_PORT"
# The simulator is registered with the same key, URL and secret, like the real system.
export SIM_API_KEY=$CENTRALIZED_CALLING_API_KEY
export SIM_CALLBACK_URL=$CENTRALIZED_CALLING_CALLBACK_URL
export SIM_CALLBACK_SECRET=$CALLBACK_SECRET_KEY
export SIM_ACCOUNT_CODE=$CENTRALIZED_CALLING_ACCOUNT_CODE
# Realistic calls (ringing, talk, busy, no answer…) at 1/20 of real time: the longest
# call takes 13 s. A few duplicate and reordered callbacks, as a real sender produces.
export SIM_TIME_SCALE=${SIM_TIME_SCALE:-0.05}
export SIM_DUPLICATE_RATE=${SIM_DUPLICATE_RATE:-0.05}
export SIM_REORDER_RATE=${SIM_REORDER_RATE:-0.05}
export CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS=500
export CALLBRIDGE__TELEMETRY__LOG_FORMAT=pretty
export RUST_LOG=${RUST_LOG:-info}

# What the CLI needs to reach this demo, for a shell that sources it after (or during) the
# run. Single-quoted, so a password with shell characters in the database URL survives.
env_file=$run_dir/callbridge.env
quote() { printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"; }
{
  echo "# callbridge demo started $(date -u +%FT%TZ) by scripts/run-local.sh"
  for name in CLIENT_CALLING_DB_URL RABBITMQ_URL CENTRALIZED_CALLING_BASE_URL \
    CENTRALIZED_CALLING_API_KEY CENTRALIZED_CALLING_CALLBACK_URL \
    CENTRALIZED_CALLING_ACCOUNT_CODE CALLBACK_SECRET_KEY; do
    echo "$name=$(quote "${!name}")"
  done
} > "$env_file"
chmod 600 "$env_file"
ln -sfn "$(basename "$run_dir")/callbridge.env" "$runs/latest.env"
use_env="set -a; . $runs/latest.env; set +a; $bin/callbridge batches"

say "migrating $(printf %s "$CLIENT_CALLING_DB_URL" | sed -E 's#//([^:@/]*):[^@]*@#//\1:***@#')"
"$bin/callbridge" migrate up > "$run_dir/migrate.log" 2>&1 || { cat "$run_dir/migrate.log" >&2; die "migrate failed"; }

pids=()
stop_all() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping ${#pids[@]} processes"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  say "logs are in $run_dir"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # name binary
  "$bin/$2" > "$run_dir/$1.log" 2>&1 &
  pids+=($!)
  echo "$!" > "$run_dir/$1.pid"
}
wait_ready() { # name url
  local i
  for ((i = 0; i < 240; i++)); do
    curl -fsS -o /dev/null "$2" 2>/dev/null && return 0
    sleep 0.25
  done
  tail -n 20 "$run_dir/$1.log" >&2
  die "$1 did not become ready at $2 within 60 s (log: $run_dir/$1.log)"
}

say "starting the simulator, ingress, persister, submitter and console (logs: $run_dir)"
start sim callbridge-sim
start ingress callbridge-ingress
start persister callbridge-persister
start submitter callbridge-submitter
start console callbridge-console
wait_ready sim "http://127.0.0.1:$SIM_PORT/healthz"
wait_ready ingress "http://127.0.0.1:$INGRESS_PORT/readyz"
wait_ready persister "http://127.0.0.1:$PERSISTER_PORT/readyz"
wait_ready submitter "http://127.0.0.1:$SUBMITTER_PORT/readyz"
wait_ready console "http://127.0.0.1:$CONSOLE_PORT/readyz"
say "operator console: http://127.0.0.1:$CONSOLE_PORT  token: $CALLBRIDGE_CONSOLE_TOKEN"

# A campaign per run: the same numbers again make new batches, each run is a fresh demo.
campaign="demo $(basename "$run_dir")"
say "enqueuing $csv as campaign \"$campaign\""
"$bin/callbridge" enqueue "$csv" --campaign "$campaign" | tee "$run_dir/enqueue.txt"
batches=$(sed -nE 's/^enqueued +[0-9]+ in ([0-9]+) batch.*/\1/p' "$run_dir/enqueue.txt")
[ -n "$batches" ] || die "nothing was enqueued"

# This run's batches are the newest ones.
table() { "$bin/callbridge" batches --limit "$batches" "$@"; }
all_done() {
  [ "$("$bin/callbridge" batches --limit "$batches" --local --json |
    python3 -c 'import json,sys; b=json.load(sys.stdin); print(all(x["batch_status"] in ("completed","failed") for x in b))')" = True ]
}

started=$SECONDS
while ! all_done; do
  if [ -t 1 ]; then clear; fi
  say "calls in progress ($((SECONDS - started)) s)"
  table 2>/dev/null || true
  [ $((SECONDS - started)) -lt "$TIMEOUT_SECS" ] || die "the batches did not complete within $TIMEOUT_SECS s: see $run_dir/*.log"
  sleep 1
done
if [ -t 1 ]; then clear; fi
say "every batch is complete after $((SECONDS - started)) s"
table | tee "$run_dir/final.txt"
say "the CLI with this demo's settings ($env_file):"
say "  $use_env"

if [ "$exit_when_done" = 1 ]; then
  exit 0
fi
say "the stack keeps running: ingress http://127.0.0.1:$INGRESS_PORT, simulator http://127.0.0.1:$SIM_PORT"
say "operator console: http://127.0.0.1:$CONSOLE_PORT  token: $CALLBRIDGE_CONSOLE_TOKEN"
say "Ctrl-C stops everything"
wait
