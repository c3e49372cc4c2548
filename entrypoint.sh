#!/usr/bin/env bash
# Cold Harbour container entrypoint: one image, the command decides the role.
#
#   entrypoint.sh [web [GUNICORN_ARGS...]]  gunicorn serving dashboard.app:server on 0.0.0.0:${PORT:-5000}
#   entrypoint.sh workers [ARGS...]         python -m workers [ARGS...]   (all services, or a subcommand)
#   entrypoint.sh ingester|manager [ARGS]   python -m workers ingester|manager [ARGS...]
#   entrypoint.sh simulator [ARGS...]       python -m simulator [ARGS...]
#   entrypoint.sh healthcheck [PATH]        exit 0 when GET http://127.0.0.1:${PORT:-5000}PATH answers 200
#   entrypoint.sh COMMAND [ARGS...]         anything else, under the same tunnels and supervision
#
# When CF_ACCESS_CLIENT_ID and CF_ACCESS_CLIENT_SECRET are set, Cloudflare Access TCP tunnels to the
# PostgreSQL and TimescaleDB hostnames listen on 127.0.0.1:15433 / 127.0.0.1:15434 before the command
# starts (the DSNs then point there). A tunnel that dies stops the command and the container exits
# non-zero, so the platform restarts it. SIGTERM and SIGINT reach the command as SIGTERM so gunicorn and
# the workers drain; the tunnels stop only after the command has exited, so its last writes get through.
# The service token goes to cloudflared through its environment only: never on a command line, never
# printed, and never to the command (it is unset before the command starts).
set -euo pipefail

log() { printf '%s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $1"; exit "${2:-1}"; }

is_true() {
	case "${2,,}" in
	1 | true | yes | on) return 0 ;;
	0 | false | no | off | "") return 1 ;;
	*) die "$1: expected true or false, got '$2'" ;;
	esac
}

require_uint() {
	[[ "$2" =~ ^[0-9]+$ ]] || die "$1: expected a whole number, got '$2'"
}

# True when something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp: no extra tools).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

healthcheck() {
	local path=$1 port=${PORT:-5000} timeout_s=${HEALTHCHECK_TIMEOUT_S:-5} status_line=""
	require_uint PORT "$port"
	require_uint HEALTHCHECK_TIMEOUT_S "$timeout_s"
	if ! { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
		echo "healthcheck: nothing accepts connections on 127.0.0.1:$port" >&2
		return 1
	fi
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
	IFS= read -r -t "$timeout_s" status_line <&3 || true
	exec 3>&-
	status_line=${status_line%$'\r'}
	if [[ "$status_line" =~ ^HTTP/[0-9.]+\ 200([[:space:]]|$) ]]; then
		return 0
	fi
	echo "healthcheck: GET $path on 127.0.0.1:$port answered '${status_line:-nothing within ${timeout_s}s}'" >&2
	return 1
}

# ---- the command -------------------------------------------------------------------------------

role=${1:-web}
if (($# > 0)); then shift; fi

case "$role" in
healthcheck)
	if healthcheck "${1:-/healthz}"; then exit 0; fi
	exit 1
	;;
web)
	port=${PORT:-5000}
	require_uint PORT "$port"
	# gthread: every SSE stream (/stream/events) holds one thread for its lifetime while the other
	# threads keep answering Dash callbacks; see docs/infrastructure.md for why not gevent.
	cmd=(
		gunicorn
		--bind "0.0.0.0:$port"
		--worker-class gthread
		--workers "${GUNICORN_WORKERS:-2}"
		--threads "${GUNICORN_THREADS:-32}"
		--timeout "${GUNICORN_TIMEOUT_S:-60}"
		--graceful-timeout "${GUNICORN_GRACEFUL_TIMEOUT_S:-8}"
		--keep-alive 5
		--worker-tmp-dir /dev/shm
		--access-logfile -
	)
	if is_true WEB_RELOAD "${WEB_RELOAD:-false}"; then
		cmd+=(--reload)
	fi
	cmd+=("$@" dashboard.app:server)
	;;
workers) cmd=(python -m workers "$@") ;;
ingester | manager) cmd=(python -m workers "$role" "$@") ;;
simulator) cmd=(python -m simulator "$@") ;;
*) cmd=("$role" "$@") ;;
esac

# ---- signals -----------------------------------------------------------------------------------

app_pid=""

# Installed before the tunnels start so that a stop request at any point still cleans up.
# shellcheck disable=SC2317  # reached through the traps below, which shellcheck 0.9 cannot follow
forward_signal() {
	local signal=$1 code=$2
	if [[ -z "$app_pid" ]]; then
		log "received SIG$signal before $role started; exiting"
		exit "$code"
	fi
	log "received SIG$signal: sending SIGTERM to $role (pid $app_pid) so it drains"
	kill -TERM "$app_pid" 2>/dev/null || true
}
trap 'forward_signal TERM 143' TERM
trap 'forward_signal INT 130' INT

# ---- Cloudflare Access tunnels -----------------------------------------------------------------

tunnel_pids=()
tunnel_names=()
tunnel_ports=()

# shellcheck disable=SC2317  # reached through the EXIT trap, which shellcheck 0.9 cannot follow
stop_tunnels() {
	local pid
	for pid in "${tunnel_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${tunnel_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_tunnels EXIT

start_tunnel() {
	local name=$1 hostname=$2 port=$3
	if port_open "$port"; then
		die "127.0.0.1:$port is already in use; cannot start the $name tunnel there"
	fi
	log "starting the $name tunnel: cloudflared access tcp $hostname -> 127.0.0.1:$port"
	TUNNEL_SERVICE_TOKEN_ID=$CF_ACCESS_CLIENT_ID TUNNEL_SERVICE_TOKEN_SECRET=$CF_ACCESS_CLIENT_SECRET \
		cloudflared access tcp --hostname "$hostname" --url "127.0.0.1:$port" &
	tunnel_pids+=("$!")
	tunnel_names+=("$name")
	tunnel_ports+=("$port")
}

wait_for_tunnel() {
	local i=$1 wait_s=$2
	local name=${tunnel_names[$i]} port=${tunnel_ports[$i]} pid=${tunnel_pids[$i]}
	# Microsecond clock (bash 5 EPOCHREALTIME): SECONDS ticks whole seconds and would cut a wait short.
	local now_us=${EPOCHREALTIME//[!0-9]/} status=0
	local deadline_us=$((now_us + wait_s * 1000000))
	until port_open "$port"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" || status=$?
			die "the $name tunnel (cloudflared) exited with status $status before 127.0.0.1:$port accepted connections"
		fi
		now_us=${EPOCHREALTIME//[!0-9]/}
		if ((now_us >= deadline_us)); then
			die "the $name tunnel did not accept connections on 127.0.0.1:$port within ${wait_s}s (CF_ACCESS_TUNNEL_WAIT_S); check the hostname, the Access policy and the service token"
		fi
		sleep 0.2
	done
	log "the $name tunnel accepts connections on 127.0.0.1:$port"
}

cf_id=${CF_ACCESS_CLIENT_ID:-}
cf_secret=${CF_ACCESS_CLIENT_SECRET:-}
if [[ -z "$cf_id" && -z "$cf_secret" ]]; then
	log "WARNING: CF_ACCESS_CLIENT_ID/CF_ACCESS_CLIENT_SECRET not set: no Cloudflare Access tunnels; the DSNs must reach the databases directly"
elif [[ -z "$cf_id" || -z "$cf_secret" ]]; then
	missing=CF_ACCESS_CLIENT_SECRET
	[[ -n "$cf_secret" ]] && missing=CF_ACCESS_CLIENT_ID
	die "$missing is not set: set both CF_ACCESS_CLIENT_ID and CF_ACCESS_CLIENT_SECRET, or neither"
else
	pg_hostname=${CF_ACCESS_PG_HOSTNAME:-}
	ts_hostname=${CF_ACCESS_TS_HOSTNAME:-}
	pg_port=${CF_ACCESS_PG_LOCAL_PORT:-15433}
	ts_port=${CF_ACCESS_TS_LOCAL_PORT:-15434}
	wait_s=${CF_ACCESS_TUNNEL_WAIT_S:-30}
	[[ -n "$pg_hostname" ]] || die "CF_ACCESS_PG_HOSTNAME is not set: the PostgreSQL hostname behind Cloudflare Access is required with CF_ACCESS_CLIENT_ID"
	require_uint CF_ACCESS_PG_LOCAL_PORT "$pg_port"
	require_uint CF_ACCESS_TS_LOCAL_PORT "$ts_port"
	require_uint CF_ACCESS_TUNNEL_WAIT_S "$wait_s"
	command -v cloudflared >/dev/null || die "cloudflared is not on PATH"

	start_tunnel PostgreSQL "$pg_hostname" "$pg_port"
	if [[ -n "$ts_hostname" ]]; then
		start_tunnel TimescaleDB "$ts_hostname" "$ts_port"
	else
		log "CF_ACCESS_TS_HOSTNAME not set: no TimescaleDB tunnel (the PostgreSQL DSN serves both roles)"
	fi
	for i in "${!tunnel_pids[@]}"; do wait_for_tunnel "$i" "$wait_s"; done
fi

# ---- supervision -------------------------------------------------------------------------------

# The service token is cloudflared's alone (it got it above): the command never needs it, so a
# compromised dashboard or worker cannot read it from its own environment (/proc/self/environ).
unset CF_ACCESS_CLIENT_ID CF_ACCESS_CLIENT_SECRET cf_id cf_secret

"${cmd[@]}" &
app_pid=$!
log "started $role (pid $app_pid)"

tunnel_failed=""
app_status=""
while [[ -z "$app_status" ]]; do
	finished=""
	status=0
	wait -n -p finished "$app_pid" "${tunnel_pids[@]}" || status=$?
	if [[ -z "${finished:-}" ]]; then
		# A trapped signal interrupted wait (forward_signal has passed it on). Should the command
		# already be gone, collect its status here rather than waiting on nothing.
		if ! kill -0 "$app_pid" 2>/dev/null; then
			app_status=0
			wait "$app_pid" || app_status=$?
		fi
		continue
	fi
	if [[ "$finished" == "$app_pid" ]]; then
		app_status=$status
		continue
	fi
	for i in "${!tunnel_pids[@]}"; do
		if [[ "${tunnel_pids[$i]}" == "$finished" ]]; then
			tunnel_failed=${tunnel_names[$i]}
			unset 'tunnel_pids[i]'
		fi
	done
	log "ERROR: the $tunnel_failed tunnel exited with status $status: stopping $role"
	kill -TERM "$app_pid" 2>/dev/null || true
done

if [[ -n "$tunnel_failed" ]]; then
	log "$role exited with status $app_status after the $tunnel_failed tunnel failed; exiting 1 so the container restarts"
	exit 1
fi
log "$role exited with status $app_status"
exit "$app_status"
