#!/usr/bin/env bash
# pairs.sh - issue 19's 1:1 pairs: N publishers each to its own subscriber (idmq-bench fanin), QoS 0 and 1,
# window 32, idmq with its defaults (JWT + ACL, memory store) and Mosquitto interleaved round by round; prints
# the medians of deliveries/s, their ratio, and the messages lost.
#
# Usage: bench/pairs.sh [ROUNDS (default 5)] [PAIRS (default 10)] [MESSAGES per publisher (default 10000)]
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
rounds=${1:-5} pairs=${2:-10} messages=${3:-10000}
out=$(mktemp -d /tmp/idmq-pairs.XXXXXX)
tcp=21980 ws=21981 http=21982
trap stop_all EXIT
ulimit -n "$(ulimit -Hn)"
need_mosquitto
build_bench "$out"
"$bench" keygen --alg RS256 -o "$out/key.pem"
write_idmq_config "$out/idmq.yaml" "$out/key.pem" "$tcp" "$ws" "$http"
"$bench" mint -c "$out/idmq.yaml" -n "$pairs" -o "$out/tokens.txt"
write_mosquitto "$out/mosquitto" "$pairs" "$tcp" "$ws"
load=(--scenario fanin --publishers "$pairs" --messages "$messages" --qos 0,1 --inflight 32 --timeout 120s --drain 3s)
for round in $(seq 1 "$rounds"); do
	log "round $round of $rounds"
	start_idmq idmq-jwt "$out/idmq.yaml" "$tcp"
	"$bench" --addr "127.0.0.1:$tcp" --label idmq-jwt --broker-pid "$broker_pid" --tokens "$out/tokens.txt" "${load[@]}" >>"$out/idmq-jwt.jsonl"
	stop_broker
	start_mosquitto mosquitto "$out/mosquitto" "$tcp"
	"$bench" --addr "127.0.0.1:$tcp" --label mosquitto --broker-pid "$broker_pid" --users "$out/mosquitto/users.txt" "${load[@]}" >>"$out/mosquitto.jsonl"
	stop_broker
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = {}
for label in ("idmq-jwt", "mosquitto"):
    for line in open(f"{sys.argv[1]}/{label}.jsonl"):
        r = json.loads(line)
        if r.get("scenario") == "fanin":
            runs.setdefault((label, r["qos"]), []).append(r["messages"])
for qos in (0, 1):
    i, m = runs[("idmq-jwt", qos)], runs[("mosquitto", qos)]
    mi, mm = statistics.median(x["out_per_s"] for x in i), statistics.median(x["out_per_s"] for x in m)
    print(f"QoS {qos}: idmq-jwt {mi:,.0f}/s, mosquitto {mm:,.0f}/s, ratio {mi / mm:.2f}x; "
          f"lost idmq {sum(x['lost'] for x in i)}, mosquitto {sum(x['lost'] for x in m)}")
PY
