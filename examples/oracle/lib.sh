# Shared by the DuckDB oracles' scripts (sourced, not run): a temporary directory removed on
# exit, the example built where CI's `cargo test` built it, and DuckDB from PyPI in a venv.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"     # sets root, DUCKDB_VERSION, tmp
#   oracle_build log_analytics                          # sets bin (dev profile; --release too)
#   oracle_venv                                         # sets py (a python with duckdb)

oracle_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
root="$oracle_root"
# The one DuckDB version of every oracle in the repository (the SQL expectations too).
DUCKDB_VERSION="$(tr -d '[:space:]' <"$root/.ci/duckdb-version")"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/weir-oracle.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# `die WHAT [LOG]`: one failed check (with the log's tail), the count line, exit 1.
die() {
    echo "FAIL $1"
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 20 "$2" | sed 's/^/       /'
    echo "0 passed, 1 failed"
    exit 1
}

# `oracle_build EXAMPLE [--release]`: builds the example and sets `bin`. The dev build takes
# `--workspace` (the features of `cargo test --workspace`, so CI reuses its build, in
# CARGO_TARGET_DIR if set); a release build (for benchmarks) only the example's own features.
oracle_build() {
    local name=$1 profile=debug started=$SECONDS
    local args=(build --locked --quiet --workspace --example "$name")
    if [ "${2:-}" = --release ]; then
        args=(build --locked --quiet --release --example "$name")
        profile=release
    fi
    cd "$root" || die "cd $root"
    cargo "${args[@]}" >"$tmp/build.log" 2>&1 || die "cargo ${args[*]}" "$tmp/build.log"
    local target
    target="$(cargo metadata --locked --format-version 1 --no-deps 2>"$tmp/metadata.log" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" ||
        die "cargo metadata (the target directory)" "$tmp/metadata.log"
    bin="$target/$profile/examples/$name"
    [ -x "$bin" ] || die "no $bin after the build"
    echo "($name built in $((SECONDS - started)) s)" >&2
}

# `oracle_venv`: a venv with duckdb==DUCKDB_VERSION in the temporary directory; sets `py`.
oracle_venv() {
    { python3 -m venv "$tmp/venv" &&
        "$tmp/venv/bin/pip" install --quiet --disable-pip-version-check "duckdb==$DUCKDB_VERSION"; } \
        >"$tmp/pip.log" 2>&1 || die "python3 -m venv + pip install duckdb==$DUCKDB_VERSION" "$tmp/pip.log"
    py="$tmp/venv/bin/python"
}
