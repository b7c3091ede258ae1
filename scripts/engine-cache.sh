# Sourced by the engine build scripts (build-llama-server.sh, llama-convert.sh, vllm-venv.sh): their common arguments and
# the cache root, the same rule as model_service/engine_paths.py (engines_home()).
#   engine_args NAME DEFAULT_FLAVOUR "$@"   sets FLAVOUR (cpu|cuda) and PRINT_ONLY (0|1)
#   engine_lock DIR                         one build per machine at a time (waits for the other)

ENGINES_HOME="${MODEL_SERVICE_ENGINES:-${MODEL_SERVICE_HOME:-$HOME/.cache/model-service}/engines}"

engine_args() {
  local name=$1 arg
  FLAVOUR=$2
  PRINT_ONLY=0
  shift 2
  for arg in "$@"; do
    case "$arg" in
      --cuda) FLAVOUR=cuda ;;
      --cpu) FLAVOUR=cpu ;;
      --print-path) PRINT_ONLY=1 ;;
      *) echo "$name: unknown argument $arg" >&2; exit 2 ;;
    esac
  done
  case "$FLAVOUR" in cpu|cuda) ;; *) echo "$name: flavour must be cpu or cuda" >&2; exit 2 ;; esac
}

engine_lock() {
  mkdir -p "$1"
  exec 9>"$1/.lock"
  flock 9
}
