#!/usr/bin/env bash
# scale.sh - idle authenticated connections at scale (issue 10), idmq and Mosquitto side by side in one run.
# For each count and transport, a fresh broker gets N connections (spread over several 127.0.0.x source
# addresses), each authenticated (idmq: its own ES256 token from the local provider; Mosquitto: its own
# password) with one QoS 1 subscription to bench/all. The report gives broker RSS, Go heap and goroutine
# stacks per connection, goroutines per connection, time to connect all, then one message published to
# bench/all and its delivery to every client (p50/p99, none may be lost). Brokers: idmq (JWT + ACL, idmq's
# defaults), idmq-allow (the same code, auth and ACL replaced by allow-all: the cost without idmq's per-client
# state), mosquitto, idmq-mochi-defaults (idmq with mochi's per-connection settings). Writes the scale section
# of BENCHMARKS.md. Exit 1 if any run failed, refused or dropped a connection or lost the message anywhere.
#
# Usage: bench/scale.sh [--counts "5000 19000"] [--transports "tcp ws"] [--brokers "idmq idmq-allow mosquitto idmq-mochi-defaults"]
#                       [--source-ips 4] [--out DIR] [--report FILE] [--port-base PORT] [--no-profile]
# One load generator and one broker each stop near 19,900 connections when RLIMIT_NOFILE is 20,000 (this
# container's hard limit); the script refuses counts the limit cannot hold.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

counts="5000 19000" transports="tcp ws" brokers="idmq idmq-allow mosquitto idmq-mochi-defaults" source_ips=4
out="" report="" port_base=21890 profile=1
while [ $# -gt 0 ]; do
	case "$1" in
	--counts) counts=$2; shift ;;
	--transports) transports=$2; shift ;;
	--brokers) brokers=$2; shift ;;
	--source-ips) source_ips=$2; shift ;;
	--out) out=$2; shift ;;
	--report) report=$2; shift ;;
	--port-base) port_base=$2; shift ;;
	--no-profile) profile=0 ;;
	-h | --help) sed -n '2,16p' "$0"; exit 0 ;;
	*) echo "scale.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$out" ] || out=$(mktemp -d /tmp/idmq-scale.XXXXXX)
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/*.jsonl "$out"/profile-*.txt "$out"/*.broker.log "$out"/*.bench.log
[ -n "$report" ] || report=$here/BENCHMARKS.md

tcp=$port_base ws=$((port_base + 1)) http=$((port_base + 2)) pprof=$((port_base + 3))
for p in $tcp $ws $http $pprof; do
	port_free "$p" || die "127.0.0.1:$p is in use (choose another --port-base)"
done

trap stop_all EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)"
max=0
for n in $counts; do
	[ "$n" -gt 0 ] 2>/dev/null || die "--counts: $n is not a positive number"
	[ "$n" -gt "$max" ] && max=$n
done
if [ $((max + 100)) -gt "$(ulimit -n)" ]; then
	die "$max connections need more than RLIMIT_NOFILE $(ulimit -n) descriptors in the generator and in the broker"
fi
need_mosquitto
log "results in $out"
build_bench "$out"

"$bench" keygen --alg ES256 -o "$out/ES256.pem"
write_idmq_config "$out/idmq.yaml" "$out/ES256.pem" "$tcp" "$ws" "$http"
write_idmq_config "$out/idmq-mochi.yaml" "$out/ES256.pem" "$tcp" "$ws" "$http" "${mochi_defaults[@]}"
"$bench" mint -c "$out/idmq.yaml" -n "$max" -o "$out/tokens.txt"
write_mosquitto "$out/mosquitto" "$max" "$tcp" "$ws"

status=0
labels=""

# heap_profile LABEL: once the generator reports its clients settled, a heap profile of the broker.
heap_profile() {
	local label=$1 i
	for i in $(seq 1 1200); do
		grep -q "settling" "$out/$label.bench.log" 2>/dev/null && break
		sleep 0.1
	done
	sleep 1
	go tool pprof -top -sample_index=inuse_space -nodecount=25 "$bench" "http://127.0.0.1:$pprof/debug/pprof/heap" 2>/dev/null |
		sed -n '/^Showing\|flat%/,$p' >"$out/profile-heap-$label.txt" || true
}

for n in $counts; do
	for t in $transports; do
		case "$t" in
		tcp) port=$tcp ;;
		ws) port=$ws ;;
		*) die "--transports: $t is not tcp or ws" ;;
		esac
		for b in $brokers; do
			label=$b-$n
			case " $labels " in *" $label "*) ;; *) labels="$labels $label" ;; esac
			touch "$out/$label.jsonl"
			creds=() serve=() prof=""
			case "$b" in
			idmq)
				creds=(--tokens "$out/tokens.txt" --metrics-url "http://127.0.0.1:$http/metrics")
				if [ "$profile" = 1 ] && [ "$n" = "$max" ]; then
					serve=(--pprof "127.0.0.1:$pprof" --mem-profile-rate 4096)
					prof=1
				fi
				start_idmq "$label-$t" "$out/idmq.yaml" "$port" "${serve[@]}" || { status=1; continue; } ;;
			idmq-allow)
				creds=(--tokens "$out/tokens.txt" --metrics-url "http://127.0.0.1:$http/metrics")
				start_idmq "$label-$t" "$out/idmq.yaml" "$port" --allow-all || { status=1; continue; } ;;
			idmq-mochi-defaults)
				creds=(--tokens "$out/tokens.txt" --metrics-url "http://127.0.0.1:$http/metrics")
				start_idmq "$label-$t" "$out/idmq-mochi.yaml" "$port" || { status=1; continue; } ;;
			mosquitto)
				creds=(--users "$out/mosquitto/users.txt")
				start_mosquitto "$label-$t" "$out/mosquitto" "$port" || { status=1; continue; } ;;
			*) die "--brokers: unknown broker $b" ;;
			esac
			log "$label over $t: $n idle connections"
			profiler=""
			if [ -n "$prof" ]; then
				heap_profile "$label-$t" &
				profiler=$!
				started_pids+=("$profiler")
			fi
			if ! "$bench" --addr "127.0.0.1:$port" --transport "$t" --label "$label" --scenario idle --idle-clients "$n" \
				--idle-topic bench/all --source-ips "$source_ips" --idle-settle 5s --keepalive 300s \
				--broker-pid "$broker_pid" "${creds[@]}" --timeout 240s --total-timeout 300s \
				>>"$out/$label.jsonl" 2>"$out/$label-$t.bench.log"; then
				log "$label over $t: idmq-bench failed (see $out/$label-$t.bench.log)"
				status=1
			fi
			if [ -n "$profiler" ]; then
				wait "$profiler" 2>/dev/null || true
				forget "$profiler"
			fi
			stop_broker
		done
	done
done

write_meta "$out/meta.txt" "$labels"
echo "setup: counts $counts; transports $transports; $source_ips source addresses; settle 5 s; keep alive 300 s" >>"$out/meta.txt"
if ! "$bench" report --dir "$out" --kind scale -o "$report"; then
	status=1
fi
log "report: $report"
exit $status
