#!/usr/bin/env bash
# The body of action.yml: mask secrets, get the cyan binary, turn the inputs
# into one cyan command line, and run it with `--output github`, which writes
# the step outputs, the job summary and the ::error:: annotation itself.
set -euo pipefail

fail() {
  echo "::error title=cyan action::$*"
  exit 2
}

# Secrets first, before anything could print them. A multi-line secret is
# masked line by line, as GitHub matches masks per line.
mask() {
  local line
  while IFS= read -r line; do
    line="${line#"${line%%[![:space:]]*}"}"
    [ ${#line} -ge 4 ] && echo "::add-mask::$line"
  done <<<"$1"
  return 0
}
mask "${INPUT_REGISTRY_PASSWORD:-}"
mask "${INPUT_KUBECONFIG:-}"

# A prebuilt binary if one is given, else one built from this action's own
# source (no download from anywhere), cached by a hash of that source.
cyan_binary() {
  if [ -n "${INPUT_CYAN_BINARY:-}" ]; then
    [ -x "$INPUT_CYAN_BINARY" ] || fail "cyan-binary: $INPUT_CYAN_BINARY is not an executable file"
    echo "$INPUT_CYAN_BINARY"
    return
  fi
  local src="$GITHUB_ACTION_PATH" key root cache
  command -v cargo >/dev/null ||
    fail "cargo is not installed: set up Rust (e.g. dtolnay/rust-toolchain) or pass cyan-binary"
  key=$(cd "$src" && find Cargo.toml Cargo.lock src crates -type f -print0 | sort -z |
    xargs -0 sha256sum | sha256sum | cut -c1-16)
  root="${RUNNER_TOOL_CACHE:-$HOME/.cache}/cyan"
  cache="$root/$key"
  if [ ! -x "$cache/cyan" ]; then
    echo "::group::build cyan from source (cargo build --locked --release)" >&2
    # One target folder for every version: a new source rebuilds incrementally.
    cargo build --locked --release --bin cyan \
      --manifest-path "$src/Cargo.toml" --target-dir "$root/target" >&2
    mkdir -p "$cache"
    cp "$root/target/release/cyan" "$cache/cyan"
    echo "::endgroup::" >&2
  fi
  echo "$cache/cyan"
}
cyan=$(cyan_binary)

[ -n "${INPUT_REGISTRY_USERNAME:-}" ] && export CYAN_REGISTRY_USERNAME="$INPUT_REGISTRY_USERNAME"
[ -n "${INPUT_REGISTRY_PASSWORD:-}" ] && export CYAN_REGISTRY_PASSWORD="$INPUT_REGISTRY_PASSWORD"
[ -n "${INPUT_DOCKER_HOST:-}" ] && export DOCKER_HOST="$INPUT_DOCKER_HOST"
if [ -n "${INPUT_KUBECONFIG:-}" ]; then
  kubeconfig="${RUNNER_TEMP:-/tmp}/cyan-kubeconfig-$$"
  (umask 077 && printf '%s\n' "$INPUT_KUBECONFIG" >"$kubeconfig")
  trap 'rm -f "$kubeconfig"' EXIT
  export KUBECONFIG="$kubeconfig"
fi

command="${INPUT_COMMAND:-deploy}"
args=(-c "${INPUT_CONFIG:-cyan.yaml}" --output github)
[ -n "${INPUT_ENVIRONMENT:-}" ] && args+=(-e "$INPUT_ENVIRONMENT")
image_args=()
[ -n "${INPUT_IMAGE:-}" ] && image_args+=(--image "$INPUT_IMAGE")
[ -n "${INPUT_REGISTRY:-}" ] && image_args+=(--registry "$INPUT_REGISTRY")
bool() {
  case "$2" in
    true | false) ;;
    *) fail "$1 must be true or false, not '$2'" ;;
  esac
}

case "$command" in
  deploy)
    [ -n "${INPUT_VERSION:-}" ] && args+=(--version "$INPUT_VERSION")
    if [ -n "${INPUT_REQUIRE_APPROVAL:-}" ]; then
      bool require-approval "$INPUT_REQUIRE_APPROVAL"
      args+=("--require-approval=$INPUT_REQUIRE_APPROVAL")
    fi
    bool rollback-on-failure "${INPUT_ROLLBACK_ON_FAILURE:-true}"
    [ "${INPUT_ROLLBACK_ON_FAILURE:-true}" = true ] && args+=(--rollback-on-failure)
    args+=("${image_args[@]}")
    ;;
  rollback)
    [ -n "${INPUT_VERSION:-}" ] && args+=(--to "$INPUT_VERSION")
    args+=("${image_args[@]}")
    ;;
  promote)
    if [ -n "${INPUT_FROM:-}" ]; then
      [ -n "${INPUT_ENVIRONMENT:-}" ] || fail "from needs environment: the stage to promote to"
      args+=(--from "$INPUT_FROM" --to "$INPUT_ENVIRONMENT")
      [ -n "${INPUT_VERSION:-}" ] && args+=(--version "$INPUT_VERSION")
    fi
    args+=("${image_args[@]}")
    ;;
  status) ;;
  *) fail "command must be deploy, rollback, promote or status, not '$command'" ;;
esac

echo "cyan $command ${args[*]}" >&2
exec "$cyan" "$command" "${args[@]}"
