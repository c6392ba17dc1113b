# lib.sh - shared by bench/compare.sh and bench/scale.sh (sourced, not run): building the tools, writing broker
# configs and credentials, starting and stopping brokers, the run's meta data. Every broker listens on
# 127.0.0.1 only, and every process started here is stopped by stop_all (the callers trap EXIT).

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

started_pids=()
broker_pid=""
broker_label=""

log() { echo "$(basename "$0"): $*" >&2; }
die() { log "$*"; exit 1; }

# stop_pid PID: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

stop_all() {
	local pid
	for pid in "${started_pids[@]}"; do
		stop_pid "$pid"
	done
	started_pids=()
	broker_pid=""
}

# forget PID: a stopped process leaves the list, so that stop_all never signals a reused pid.
forget() {
	local keep=() pid
	for pid in "${started_pids[@]}"; do
		[ "$pid" = "$1" ] || keep+=("$pid")
	done
	started_pids=("${keep[@]}")
}

stop_broker() {
	if [ -n "$broker_pid" ]; then
		stop_pid "$broker_pid"
		forget "$broker_pid"
		broker_pid=""
	fi
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PID PORT LOG: until the broker accepts on PORT (10 s), failing early if it exits.
wait_port() {
	local pid=$1 port=$2 logf=$3 i
	for i in $(seq 1 200); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "broker $broker_label exited at start; its log ($logf):"
			tail -n 20 "$logf" >&2
			return 1
		fi
		if ! port_free "$port"; then
			return 0
		fi
		sleep 0.05
	done
	log "broker $broker_label does not listen on 127.0.0.1:$port after 10 s"
	return 1
}

# need_mosquitto: Debian's mosquitto 2.x, installed from Debian when missing and we are root.
need_mosquitto() {
	if ! command -v mosquitto >/dev/null || ! command -v mosquitto_passwd >/dev/null; then
		if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
			log "installing mosquitto from Debian"
			DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >/dev/null 2>&1 ||
				{ DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1 &&
					DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >/dev/null 2>&1; } ||
				die "apt-get install mosquitto failed"
		else
			die "mosquitto and mosquitto_passwd are required (apt-get install mosquitto)"
		fi
	fi
	# mosquitto -h exits non-zero after printing its version.
	mosquitto_version=$( (mosquitto -h 2>/dev/null || true) | sed -n 's/^mosquitto version //p' | head -n1)
	case "$mosquitto_version" in
	2.*) ;;
	*) die "need Mosquitto 2.x, found '${mosquitto_version:-unknown}'" ;;
	esac
}

# build_bench DIR: the load generator (also the allow-all server, minter and report writer).
build_bench() {
	bench=$1/idmq-bench
	(cd "$here" && go build -o "$bench" ./cmd/idmq-bench) || die "go build ./cmd/idmq-bench failed"
}

# write_idmq_config FILE KEYFILE TCP WS HTTP [MQTT-LINE...]: idmq on loopback, JWT (local provider with the
# given key) and the ACL users/%u/# (plus bench/all for the scale fan-out), memory storage (Mosquitto runs with
# persistence off too), the connect rate limit out of the way of storms from one address.
write_idmq_config() {
	local file=$1 key=$2 tcp=$3 ws=$4 http=$5
	shift 5
	mkdir -p "$(dirname "$file")/data-$(basename "$file" .yaml)"
	{
		echo "data_dir: ./data-$(basename "$file" .yaml)"
		echo "log: {level: warn, format: text}"
		echo "listeners:"
		echo "  - {type: tcp, address: \"127.0.0.1:$tcp\"}"
		echo "  - {type: ws, address: \"127.0.0.1:$ws\", path: /mqtt}"
		echo "http: {address: \"127.0.0.1:$http\"}"
		echo "storage: {type: memory}"
		echo "mqtt:"
		echo "  max_connect_rate: {per_second: 1000000, burst: 1000000}"
		local line
		for line in "$@"; do echo "  $line"; done
		echo "auth:"
		echo "  signing_key_file: $key"
		echo "  providers:"
		echo "    - {name: local, type: local}"
		echo "acl:"
		echo "  rules:"
		echo "    - {topic: \"users/%u/#\", access: pubsub}"
		echo "    - {topic: \"bench/all\", access: pubsub}"
	} >"$file"
}

# mochi_defaults: the per-connection settings mochi v2.7.9 ships, which idmq's defaults replace.
mochi_defaults=("outbound_queue: 8192" "read_buffer_size: 2048" "write_buffer_size: 2048" "max_inflight: 1024")

# write_mosquitto DIR N TCP WS: config, password file (N users bench-i with password pw-i, hashed by
# mosquitto_passwd) and ACL for Mosquitto; users-file for idmq-bench goes to DIR/users.txt.
write_mosquitto() {
	local dir=$1 n=$2 tcp=$3 ws=$4
	mkdir -p "$dir"
	awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) printf "bench-%d:pw-%d\n", i, i }' >"$dir/users.txt"
	cp "$dir/users.txt" "$dir/passwd"
	mosquitto_passwd -U "$dir/passwd" || die "mosquitto_passwd -U failed"
	printf 'pattern readwrite users/%%u/#\npattern readwrite bench/all\n' >"$dir/acl"
	chmod 0600 "$dir/passwd" "$dir/acl"
	{
		echo "per_listener_settings false"
		echo "allow_anonymous false"
		echo "password_file $dir/passwd"
		echo "acl_file $dir/acl"
		echo "persistence false"
		echo "max_keepalive 65535"
		echo "log_dest stderr"
		echo "log_type error"
		echo "log_type warning"
		# Started by root, mosquitto would switch to the mosquitto user, who cannot read this directory.
		echo "user $(id -un)"
		echo "listener $tcp 127.0.0.1"
		echo "listener $ws 127.0.0.1"
		echo "protocol websockets"
	} >"$dir/mosquitto.conf"
}

# start_idmq LABEL CONFIG PORT [SERVE-FLAG...]: idmq's broker through idmq-bench serve (the same broker.New the
# idmq binary runs; --allow-all only here).
start_idmq() {
	local label=$1 config=$2 port=$3
	shift 3
	broker_label=$label
	"$bench" serve -c "$config" "$@" 2>>"$out/$label.broker.log" &
	broker_pid=$!
	started_pids+=("$broker_pid")
	wait_port "$broker_pid" "$port" "$out/$label.broker.log"
}

start_mosquitto() {
	local label=$1 dir=$2 port=$3
	broker_label=$label
	mosquitto -c "$dir/mosquitto.conf" 2>>"$out/$label.broker.log" &
	broker_pid=$!
	started_pids+=("$broker_pid")
	wait_port "$broker_pid" "$port" "$out/$label.broker.log"
}

# write_meta FILE LABELS...: machine and versions for the report.
write_meta() {
	local file=$1
	shift
	local commit dirty=""
	commit=$(git -C "$here" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
	if [ -n "$(git -C "$here" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		dirty=" (with uncommitted changes)"
	fi
	{
		echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, Linux $(uname -r)"
		echo "limits: RLIMIT_NOFILE $(ulimit -n) (hard $(ulimit -Hn)), net.core.somaxconn $(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo '?')"
		echo "versions: $(go version | awk '{print $3}'), idmq $commit$dirty, mosquitto ${mosquitto_version:-?}"
		echo "labels: $*"
	} >"$file"
}
