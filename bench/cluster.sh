#!/usr/bin/env bash
# cluster.sh - what clustering costs: the same fan-in load (publishers -> subscribers, one topic each, QoS 0 and 1),
# in one invocation, against:
#   idmq            one idmq node without a cluster section (memory storage)
#   idmq-cluster-1  one idmq node with a cluster section: embedded NATS, replicas 1 (every publish goes through
#                   JetStream and comes back through the node's ordered consumer)
#   idmq-cluster-3  three idmq nodes on this machine (embedded NATS routes, replicas 3): publishers on node A,
#                   subscribers on node B, so every delivery crosses the cluster
# All with JWT auth (local provider, RS256) and the ACL users/%u/#. Broker CPU is the sum over the nodes. Then
# writes the cluster section of BENCHMARKS.md. Exit status 1 if any scenario failed or lost a QoS 1 message.
#
# Usage: bench/cluster.sh [--quick] [--rounds N] [--out DIR] [--report FILE] [--port-base PORT] [--profile]
#   --quick      small counts, about a minute: the CI smoke test; the report goes to DIR/BENCHMARKS.md
#   --rounds     interleaved rounds (default 3, quick 1)
#   --report     markdown file to update (default: BENCHMARKS.md at the repo root, or DIR's with --quick)
#   --port-base  first of 15 loopback ports (default 21900; below the ephemeral range)
#   --profile    after the rounds, CPU profiles of node A and node B of a 3-node cluster under QoS 1 fan-in
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

quick=0 rounds="" out="" report="" port_base=21900 profile=0
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--rounds) rounds=$2; shift ;;
	--out) out=$2; shift ;;
	--report) report=$2; shift ;;
	--port-base) port_base=$2; shift ;;
	--profile) profile=1 ;;
	-h | --help) sed -n '2,19p' "$0"; exit 0 ;;
	*) echo "cluster.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$out" ] || out=$(mktemp -d /tmp/idmq-cluster.XXXXXX)
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out"/*.jsonl "$out"/profile-*.txt "$out"/*.log "$out"/data-*

if [ "$quick" = 1 ]; then
	: "${rounds:=1}"
	[ -n "$report" ] || report=$out/BENCHMARKS.md
	load=(--publishers 10 --messages 500 --timeout 60s --total-timeout 150s --drain 3s)
else
	: "${rounds:=3}"
	[ -n "$report" ] || report=$here/BENCHMARKS.md
	load=(--publishers 20 --messages 5000 --timeout 120s --total-timeout 10m --drain 5s)
fi
for p in $(seq "$port_base" $((port_base + 14))); do
	port_free "$p" || die "127.0.0.1:$p is in use (choose another --port-base)"
done

trap stop_all EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)"
log "results in $out"
build_bench "$out"

# Ports: node i (0..2) has tcp base+4i, ws base+4i+1, http base+4i+2, NATS route base+4i+3; the node without a
# cluster uses node 0's first three.
tcp_of() { echo $((port_base + 4 * $1)); }
route_of() { echo "127.0.0.1:$((port_base + 4 * $1 + 3))"; }

"$bench" keygen --alg RS256 -o "$out/signing.pem"
write_idmq_config "$out/idmq.yaml" "$out/signing.pem" "$(tcp_of 0)" $((port_base + 1)) $((port_base + 2))

# write_node FILE I N: node I of an N-node cluster (embedded NATS, routes to the others).
write_node() {
	local file=$1 i=$2 n=$3 j routes=""
	write_idmq_config "$file" "$out/signing.pem" "$(tcp_of "$i")" $((port_base + 4 * i + 1)) $((port_base + 4 * i + 2))
	for j in $(seq 0 $((n - 1))); do
		[ "$j" = "$i" ] || routes="$routes${routes:+, }\"nats://$(route_of "$j")\""
	done
	{
		echo "cluster:"
		echo "  node: bench-$i"
		# One node alone has no route port: JetStream refuses a clustered server without routes.
		if [ "$n" -gt 1 ]; then
			echo "  nats:"
			echo "    listen: \"$(route_of "$i")\""
			echo "    routes: [$routes]"
		fi
	} >>"$file"
}
write_node "$out/cluster1-0.yaml" 0 1
for i in 0 1 2; do
	write_node "$out/cluster3-$i.yaml" "$i" 3
done
"$bench" mint -c "$out/idmq.yaml" -n 100 -o "$out/tokens.txt"

status=0
node_pids=()

# start_node LABEL CONFIG PORT [SERVE-FLAG...]: one idmq-bench serve in the background; its pid joins node_pids.
start_node() {
	local label=$1 config=$2
	shift 3
	"$bench" serve -c "$config" "$@" 2>>"$out/$label.broker.log" &
	node_pids+=("$!")
	started_pids+=("$!")
}

# await_nodes LABEL: every started node says ready (a cluster node only once it joined its peers), 90 s at most.
await_nodes() {
	local label=$1 i
	for i in $(seq 1 900); do
		if [ "$(grep -c 'idmq-bench serve: ready' "$out/$label.broker.log" 2>/dev/null)" -ge "${#node_pids[@]}" ]; then
			return 0
		fi
		for pid in "${node_pids[@]}"; do
			kill -0 "$pid" 2>/dev/null || { log "$label: a node exited at start (see $out/$label.broker.log)"; return 1; }
		done
		sleep 0.1
	done
	log "$label: nodes not ready after 90 s (see $out/$label.broker.log)"
	return 1
}

stop_nodes() {
	local pid
	for pid in "${node_pids[@]}"; do
		stop_pid "$pid"
		forget "$pid"
	done
	node_pids=()
}

# run_label LABEL SUB-NODE CONFIG...: start one node per config (together: a cluster waits for its quorum), run
# fan-in with publishers on the first node and subscribers on node SUB-NODE, CPU summed over all nodes.
run_label() {
	local label=$1 sub=$2
	shift 2
	local i=0 config peers=""
	: >"$out/$label.broker.log"
	touch "$out/$label.jsonl"
	for config in "$@"; do
		start_node "$label" "$config" "$(tcp_of $i)"
		i=$((i + 1))
	done
	if await_nodes "$label"; then
		for pid in "${node_pids[@]:1}"; do peers="$peers${peers:+,}$pid"; done
		log "$label: fanin, publishers on 127.0.0.1:$(tcp_of 0), subscribers on 127.0.0.1:$(tcp_of "$sub")"
		if ! "$bench" --addr "127.0.0.1:$(tcp_of 0)" --sub-addr "127.0.0.1:$(tcp_of "$sub")" --label "$label" \
			--scenario fanin --qos 0,1 --broker-pid "${node_pids[0]}" ${peers:+--peer-pids "$peers"} \
			--tokens "$out/tokens.txt" "${load[@]}" >>"$out/$label.jsonl" 2>>"$out/$label.bench.log"; then
			log "$label: idmq-bench failed (see $out/$label.bench.log)"
			status=1
		fi
	else
		status=1
	fi
	stop_nodes
	rm -rf "$out"/data-*
}

for round in $(seq 1 "$rounds"); do
	log "round $round of $rounds"
	run_label idmq 0 "$out/idmq.yaml"
	run_label idmq-cluster-1 0 "$out/cluster1-0.yaml"
	run_label idmq-cluster-3 1 "$out/cluster3-0.yaml" "$out/cluster3-1.yaml" "$out/cluster3-2.yaml"
done

if [ "$profile" = 1 ]; then
	label=profile-cluster-3
	: >"$out/$label.broker.log"
	start_node "$label" "$out/cluster3-0.yaml" 0 --cpu-profile "$out/$label-a.prof"
	start_node "$label" "$out/cluster3-1.yaml" 0 --cpu-profile "$out/$label-b.prof"
	start_node "$label" "$out/cluster3-2.yaml" 0
	if await_nodes "$label"; then
		"$bench" --addr "127.0.0.1:$(tcp_of 0)" --sub-addr "127.0.0.1:$(tcp_of 1)" --label "$label" --scenario fanin \
			--qos 1 --tokens "$out/tokens.txt" "${load[@]}" >/dev/null 2>>"$out/$label.bench.log" || log "$label: idmq-bench failed"
	fi
	stop_nodes
	for node in a b; do
		go tool pprof -top -nodecount=30 "$bench" "$out/$label-$node.prof" 2>/dev/null | sed -n '/^Showing\|flat%/,$p' \
			>"$out/profile-cluster3-node-$node.txt" || true
	done
fi

mosquitto_version="(not used)"
write_meta "$out/meta.txt" idmq idmq-cluster-1 idmq-cluster-3
echo "mode: $([ "$quick" = 1 ] && echo "quick (CI smoke test; small counts, not a measurement)" || echo full), $rounds round(s): fanin ${load[*]}" >>"$out/meta.txt"
if ! "$bench" report --dir "$out" --kind cluster -o "$report"; then
	status=1
fi
log "report: $report"
exit $status
