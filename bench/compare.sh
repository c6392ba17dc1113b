#!/usr/bin/env bash
# compare.sh - run the same idmq-bench scenarios against several brokers on this machine, in one invocation.
#
# SKELETON (issue 8): the harness (cmd/idmq-bench) is done; starting the brokers is not wired yet:
#   - idmq with JWT auth + ACL users/%u/#       -> start_idmq_jwt   (needs the broker config + `idmq token`)
#   - idmq with allow-all auth and ACL           -> start_idmq_allow
#   - Debian Mosquitto 2.x, password + ACL file  -> start_mosquitto  (apt-get install mosquitto; pattern readwrite users/%u/#)
# and BENCHMARKS.md is not written yet (write_report).
#
# Usage: bench/compare.sh [--quick] [--out DIR]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
quick=0
out=$(mktemp -d /tmp/idmq-compare.XXXXXX)
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--out) out=$2; shift ;;
	*) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

bench=$out/idmq-bench
(cd "$here" && go build -o "$bench" ./cmd/idmq-bench)

if [ "$quick" = 1 ]; then
	load=(--clients 500 --publishers 10 --messages 500 --subscribers 50 --fanout-messages 50 --idle-clients 2000 --timeout 30s --total-timeout 150s)
else
	load=(--clients 2000 --publishers 50 --messages 5000 --subscribers 200 --fanout-messages 500 --idle-clients 20000 --timeout 120s --total-timeout 30m)
fi

broker_pid=""
stop_broker() {
	if [ -n "$broker_pid" ]; then
		kill "$broker_pid" 2>/dev/null || true
		wait "$broker_pid" 2>/dev/null || true
		broker_pid=""
	fi
}
trap stop_broker EXIT

# Each start_* function starts one broker in the background, sets broker_pid, waits until it accepts
# connections, and prints the extra idmq-bench flags it needs (credentials, metrics URL).
start_idmq_jwt() { echo "compare.sh: start_idmq_jwt is not wired yet" >&2; return 1; }
start_idmq_allow() { echo "compare.sh: start_idmq_allow is not wired yet" >&2; return 1; }
start_mosquitto() { echo "compare.sh: start_mosquitto is not wired yet" >&2; return 1; }

# run_one LABEL START_FUNCTION: every scenario against one fresh broker, JSON lines into $out/LABEL.jsonl.
run_one() {
	local label=$1 start=$2 extra
	extra=$($start) || return 1
	# shellcheck disable=SC2086 # extra is a flag list on purpose
	"$bench" --label "$label" --scenario connect,reconnect,fanin,fanout,idle --broker-pid "$broker_pid" \
		"${load[@]}" $extra >"$out/$label.jsonl"
	stop_broker
}

write_report() { echo "compare.sh: results in $out (BENCHMARKS.md is not written yet)" >&2; }

status=0
for b in "idmq-jwt start_idmq_jwt" "idmq-allow start_idmq_allow" "mosquitto start_mosquitto"; do
	# shellcheck disable=SC2086
	run_one $b || status=1
done
write_report
exit $status
