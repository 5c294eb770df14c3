#!/usr/bin/env bash
# Starts the hub's local stack without Docker: the hub (`mlx-hub serve`, with its
# in-process worker), optionally an MLflow server it mirrors runs to, and
# optionally a Prometheus scraping its /metrics. Runs in the foreground; Ctrl-C
# (or SIGTERM) stops everything it started. Logs go to <state-dir>/logs/.
#
#   scripts/start.sh                          # hub only, on 127.0.0.1:8000, data in ./storage
#   scripts/start.sh --mlflow --prometheus    # + MLflow on :5000, Prometheus on :9090
#
# Flags (each also as an environment variable):
#   --mlflow              MLX_HUB_START_MLFLOW=1      start `mlflow server` (pip install mlflow)
#   --prometheus          MLX_HUB_START_PROMETHEUS=1  start `prometheus` (apt-get install prometheus)
#   --port N              MLX_HUB_PORT                hub port (default 8000)
#   --mlflow-port N       MLX_HUB_MLFLOW_PORT         (default 5000)
#   --prometheus-port N   MLX_HUB_PROMETHEUS_PORT     (default 9090)
#   --data-dir DIR        MLX_HUB_DATA_DIR            hub data (default ./storage)
#   --state-dir DIR       MLX_HUB_STATE_DIR           MLflow/Prometheus data and logs (default <data-dir>/stack)
#   --bin PATH            MLX_HUB_BIN                 the mlx-hub binary (default: target/release/mlx-hub, built if missing)
#   --log-format F        MLX_HUB_LOG_FORMAT          text or json (default text)
# Other MLX_HUB_* / OTEL_* variables (README: Configuration) pass through to the hub.
set -euo pipefail
cd "$(dirname "$0")/.."

mlflow=${MLX_HUB_START_MLFLOW:-0}
prometheus=${MLX_HUB_START_PROMETHEUS:-0}
port=${MLX_HUB_PORT:-8000}
mlflow_port=${MLX_HUB_MLFLOW_PORT:-5000}
prometheus_port=${MLX_HUB_PROMETHEUS_PORT:-9090}
data_dir=${MLX_HUB_DATA_DIR:-./storage}
state_dir=${MLX_HUB_STATE_DIR:-}
bin=${MLX_HUB_BIN:-}
log_format=${MLX_HUB_LOG_FORMAT:-text}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
    case "$1" in
        --mlflow) mlflow=1 ;;
        --prometheus) prometheus=1 ;;
        --port) port=$2; shift ;;
        --mlflow-port) mlflow_port=$2; shift ;;
        --prometheus-port) prometheus_port=$2; shift ;;
        --data-dir) data_dir=$2; shift ;;
        --state-dir) state_dir=$2; shift ;;
        --bin) bin=$2; shift ;;
        --log-format) log_format=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "start.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $mlflow == 1 || $mlflow == true ]] && mlflow=1 || mlflow=0
[[ $prometheus == 1 || $prometheus == true ]] && prometheus=1 || prometheus=0
state_dir=${state_dir:-$data_dir/stack}
mkdir -p "$data_dir" "$state_dir/logs"

if [[ -z $bin ]]; then
    bin=target/release/mlx-hub
    if [[ ! -x $bin ]]; then
        echo "building $bin (cargo build --release -p mlx-hub)…" >&2
        cargo build --release -p mlx-hub
    fi
fi
[[ -x $bin ]] || { echo "start.sh: $bin is not an executable" >&2; exit 1; }

pids=()
stop() {
    trap - INT TERM EXIT
    # ${a[@]+…}: an empty array under `set -u` is an error in macOS's bash 3.2
    for pid in ${pids[@]+"${pids[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

# waits until `curl -fsS URL` answers (or the process $2 died)
wait_for() {
    local url=$1 pid=$2 name=$3
    for _ in $(seq 1 600); do
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "start.sh: $name exited; see $state_dir/logs/$name.log" >&2
            tail -n 20 "$state_dir/logs/$name.log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    echo "start.sh: $name did not answer at $url" >&2
    exit 1
}

if ((mlflow)); then
    command -v mlflow >/dev/null || { echo "start.sh: --mlflow needs the mlflow command (pip install mlflow)" >&2; exit 1; }
    mkdir -p "$state_dir/mlflow"
    mlflow server --host 127.0.0.1 --port "$mlflow_port" \
        --backend-store-uri "sqlite:///$(cd "$state_dir/mlflow" && pwd)/mlflow.db" \
        --artifacts-destination "$(cd "$state_dir/mlflow" && pwd)/artifacts" \
        >"$state_dir/logs/mlflow.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$mlflow_port/health" "$!" mlflow
    export MLX_HUB_MLFLOW_URI="http://127.0.0.1:$mlflow_port"
    echo "MLflow      http://127.0.0.1:$mlflow_port" >&2
fi

MLX_HUB_DATA_DIR=$data_dir MLX_HUB_PORT=$port \
    "$bin" --log-format "$log_format" serve >"$state_dir/logs/hub.log" 2>&1 &
hub_pid=$!
pids+=("$hub_pid")
host=${MLX_HUB_HOST:-127.0.0.1}
[[ $host == 0.0.0.0 ]] && host=127.0.0.1
wait_for "http://$host:$port/health" "$hub_pid" hub
echo "hub         http://$host:$port   (logs: $state_dir/logs/hub.log)" >&2

if ((prometheus)); then
    command -v prometheus >/dev/null || { echo "start.sh: --prometheus needs the prometheus command (apt-get install prometheus)" >&2; exit 1; }
    mkdir -p "$state_dir/prometheus"
    config=$state_dir/prometheus/prometheus.yml
    {
        echo "# written by scripts/start.sh (the compose stack's is deploy/prometheus/prometheus.yml)"
        echo "global:"
        echo "  scrape_interval: 5s"
        echo "scrape_configs:"
        echo "  - job_name: mlx-hub"
        if [[ -n ${MLX_HUB_API_TOKEN:-}${MLX_HUB_API_TOKEN_FILE:-} ]]; then
            token_file=${MLX_HUB_API_TOKEN_FILE:-$state_dir/prometheus/hub-token}
            if [[ -z ${MLX_HUB_API_TOKEN_FILE:-} ]]; then
                (umask 077; printf '%s' "$MLX_HUB_API_TOKEN" >"$token_file")
            fi
            echo "    authorization:"
            echo "      type: Bearer"
            echo "      credentials_file: $(cd "$(dirname "$token_file")" && pwd)/$(basename "$token_file")"
        fi
        echo "    static_configs:"
        echo "      - targets: ['$host:$port']"
    } >"$config"
    prometheus --config.file="$config" --storage.tsdb.path="$state_dir/prometheus/data" \
        --web.listen-address="127.0.0.1:$prometheus_port" \
        >"$state_dir/logs/prometheus.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$prometheus_port/-/ready" "$!" prometheus
    echo "Prometheus  http://127.0.0.1:$prometheus_port" >&2
fi

echo "stack up; Ctrl-C stops it" >&2
# exits when the hub does (or on a signal, through the trap)
wait "$hub_pid"
