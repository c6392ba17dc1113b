#!/usr/bin/env bash
# compare.sh - the same idmq-bench scenarios, in one invocation, against:
#   idmq-jwt                 idmq, JWT auth (local provider, one RS256 token per client) + ACL users/%u/#
#   idmq-jwt-es256/-eddsa    the same with ES256 / EdDSA keys (connect and reconnect storms only)
#   idmq-allow               idmq's own code with auth and ACL replaced by allow-all (idmq-bench serve --allow-all)
#   mosquitto                Debian's Mosquitto 2.x, password file + ACL "pattern readwrite users/%u/#"
#   idmq-jwt-mochi-defaults  idmq-jwt with mochi's per-connection settings (the defaults idmq's replace)
# plus the crypto floor (go test -bench BenchmarkVerify ./authhook) and the reconnect floor (go test -bench
# BenchmarkCachedReconnectHooks ./broker), then writes the comparison section of
# BENCHMARKS.md. Exit status 1 if any scenario against any broker failed, refused or dropped a connection, or
# lost a QoS 1 message.
#
# Usage: bench/compare.sh [--quick] [--rounds N] [--out DIR] [--report FILE] [--port-base PORT] [--no-profile]
#   --quick      small counts, under 3 minutes: the CI smoke test; the report goes to DIR/BENCHMARKS.md
#   --rounds     interleaved rounds (default 5, quick 1): one broker varies by +-20% between rounds here
#   --report     markdown file to update (default: BENCHMARKS.md at the repo root, or DIR's with --quick)
#   --port-base  first of 3 loopback ports (default 21880; below the ephemeral range)
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

quick=0 rounds="" out="" report="" port_base=21880 profile=1
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--rounds) rounds=$2; shift ;;
	--out) out=$2; shift ;;
	--report) report=$2; shift ;;
	--port-base) port_base=$2; shift ;;
	--no-profile) profile=0 ;;
	-h | --help) sed -n '2,16p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$out" ] || out=$(mktemp -d /tmp/idmq-compare.XXXXXX)
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/*.jsonl "$out"/profile-*.txt "$out"/*.broker.log "$out"/*.bench.log

# Connections come from 127.0.0.2-17: closed sockets wait 60 s in TIME_WAIT, and one address's ~28,000
# ephemeral ports run out when the idle clients follow the storms; near that point every connect(2) searches
# for a free port and the load generator's system time swamps the broker's figures. The reconnect storm runs
# 5 measured rounds (2,000 reconnects each) so that its broker CPU, read with 10 ms resolution on a noisy
# machine, averages over 10,000 reconnects. The connect storm follows an unmeasured one with other credentials
# (--connect-warmup): a fresh broker's first storm also pays for its start-up. The RS256 storm target compares
# idmq-jwt with idmq-allow-verify, two figures that each move +-20% between rounds here, so both get
# 4 more interleaved storms (fresh brokers, full mode) than the rounds give the other scenarios.
if [ "$quick" = 1 ]; then
	: "${rounds:=1}"
	[ -n "$report" ] || report=$out/BENCHMARKS.md
	load=(--clients 300 --publishers 10 --messages 300 --subscribers 50 --fanout-messages 50 --idle-clients 1000
		--connect-warmup --reconnect-rounds 2 --timeout 30s --total-timeout 100s --drain 2s --idle-settle 1s --source-ips 16)
	idle_n=1000 clients_n=300 bench_time=200x hooks_time=2000x profile=0 storm_extra=0
else
	: "${rounds:=5}"
	[ -n "$report" ] || report=$here/BENCHMARKS.md
	load=(--clients 2000 --publishers 50 --messages 2000 --subscribers 200 --fanout-messages 200 --idle-clients 10000
		--connect-warmup --reconnect-rounds 5 --timeout 120s --total-timeout 15m --idle-settle 3s --source-ips 16)
	idle_n=10000 clients_n=2000 bench_time=2s hooks_time=200000x storm_extra=4
fi
tcp=$port_base ws=$((port_base + 1)) http=$((port_base + 2))
for p in $tcp $ws $http; do
	port_free "$p" || die "127.0.0.1:$p is in use (choose another --port-base)"
done

trap stop_all EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)"
need_mosquitto
log "results in $out"
build_bench "$out"

# Keys, configs and credentials.
mkdir -p "$out/keys"
for alg in RS256 ES256 EdDSA; do
	"$bench" keygen --alg "$alg" -o "$out/keys/$alg.pem"
	write_idmq_config "$out/idmq-$alg.yaml" "$out/keys/$alg.pem" "$tcp" "$ws" "$http"
done
write_idmq_config "$out/idmq-mochi.yaml" "$out/keys/RS256.pem" "$tcp" "$ws" "$http" "${mochi_defaults[@]}"
"$bench" mint -c "$out/idmq-RS256.yaml" -n "$idle_n" -o "$out/tokens-RS256.txt"
# Twice the clients: the connect storm's warm-up uses the second half (--connect-warmup).
"$bench" mint -c "$out/idmq-ES256.yaml" -n "$((2 * clients_n))" -o "$out/tokens-ES256.txt"
"$bench" mint -c "$out/idmq-EdDSA.yaml" -n "$((2 * clients_n))" -o "$out/tokens-EdDSA.txt"
write_mosquitto "$out/mosquitto" "$idle_n" "$tcp" "$ws"

all=connect,reconnect,fanin,fanout,idle
status=0

# bench LABEL SCENARIOS FLAG...: one idmq-bench run against the broker now running, appended to LABEL.jsonl.
bench_run() {
	local label=$1 scenarios=$2
	shift 2
	log "$label: $scenarios"
	if ! "$bench" --addr "127.0.0.1:$tcp" --label "$label" --scenario "$scenarios" --broker-pid "$broker_pid" \
		"${load[@]}" "$@" >>"$out/$label.jsonl" 2>>"$out/$label.bench.log"; then
		log "$label: idmq-bench failed (see $out/$label.bench.log)"
		status=1
	fi
}

metrics=(--metrics-url "http://127.0.0.1:$http/metrics")

# run_idmq LABEL CONFIG TOKENS SCENARIOS [SERVE-FLAG...]
run_idmq() {
	local label=$1 config=$2 tokens=$3 scenarios=$4
	shift 4
	touch "$out/$label.jsonl"
	if start_idmq "$label" "$config" "$tcp" "$@"; then
		bench_run "$label" "$scenarios" --tokens "$tokens" "${metrics[@]}"
	else
		status=1
	fi
	stop_broker
}

run_mosquitto() {
	touch "$out/mosquitto.jsonl"
	if start_mosquitto mosquitto "$out/mosquitto" "$tcp"; then
		bench_run mosquitto "$all" --users "$out/mosquitto/users.txt"
	else
		status=1
	fi
	stop_broker
}

# Rounds interleave the brokers so that a slow minute on this shared machine does not favour one of them.
for round in $(seq 1 "$rounds"); do
	log "round $round of $rounds"
	run_idmq idmq-jwt "$out/idmq-RS256.yaml" "$out/tokens-RS256.txt" "$all"
	run_idmq idmq-allow "$out/idmq-RS256.yaml" "$out/tokens-RS256.txt" "$all" --allow-all
	run_idmq idmq-allow-verify "$out/idmq-RS256.yaml" "$out/tokens-RS256.txt" connect --allow-all-verify
	run_mosquitto
	run_idmq idmq-jwt-mochi-defaults "$out/idmq-mochi.yaml" "$out/tokens-RS256.txt" "$all"
	run_idmq idmq-jwt-es256 "$out/idmq-ES256.yaml" "$out/tokens-ES256.txt" connect,reconnect
	run_idmq idmq-jwt-eddsa "$out/idmq-EdDSA.yaml" "$out/tokens-EdDSA.txt" connect,reconnect
done

for extra in $(seq 1 "$storm_extra"); do
	log "extra connect storm $extra of $storm_extra"
	run_idmq idmq-jwt "$out/idmq-RS256.yaml" "$out/tokens-RS256.txt" connect
	run_idmq idmq-allow-verify "$out/idmq-RS256.yaml" "$out/tokens-RS256.txt" connect --allow-all-verify
done

# Profiles of idmq-jwt, one scenario per broker run so that each profile shows one thing.
if [ "$profile" = 1 ]; then
	for s in connect fanin; do
		label=profile-$s
		if start_idmq "$label" "$out/idmq-RS256.yaml" "$tcp" --cpu-profile "$out/$label.prof"; then
			"$bench" --addr "127.0.0.1:$tcp" --label "$label" --scenario "$s" "${load[@]}" --tokens "$out/tokens-RS256.txt" \
				>/dev/null 2>>"$out/$label.bench.log" || log "$label: idmq-bench failed"
		fi
		stop_broker
		go tool pprof -top -nodecount=25 "$bench" "$out/$label.prof" 2>/dev/null | sed -n '/^Showing\|flat%/,$p' >"$out/profile-cpu-$s.txt" || true
	done
fi

log "crypto floor: go test -bench BenchmarkVerify ./authhook"
if ! (cd "$here" && go test -run '^$' -bench '^BenchmarkVerify$' -benchtime "$bench_time" -cpu 1 ./authhook) >"$out/verify-bench.txt" 2>&1; then
	log "verify benchmark failed (see $out/verify-bench.txt)"
	status=1
fi

log "reconnect floor: go test -bench BenchmarkCachedReconnectHooks ./broker"
if ! (cd "$here" && go test -run '^$' -bench '^BenchmarkCachedReconnectHooks$' -benchtime "$hooks_time" -cpu 1 ./broker) >"$out/hooks-bench.txt" 2>&1; then
	log "hooks benchmark failed (see $out/hooks-bench.txt)"
	status=1
fi

labels="idmq-jwt idmq-allow idmq-allow-verify mosquitto idmq-jwt-mochi-defaults idmq-jwt-es256 idmq-jwt-eddsa"
write_meta "$out/meta.txt" "$labels"
{
	echo "mode: $([ "$quick" = 1 ] && echo "quick (CI smoke test; small counts, not a measurement)" || echo full), $rounds round(s): ${load[*]}"
	[ "$storm_extra" = 0 ] || echo "connect storms of idmq-jwt and idmq-allow-verify: $rounds + $storm_extra interleaved runs"
} >>"$out/meta.txt"
if ! "$bench" report --dir "$out" --kind compare -o "$report"; then
	status=1
fi
log "report: $report"
exit $status
