#!/usr/bin/env bash
# Regenerates the inputs and expected outputs of the data-driven SQL tests (tests/data_driven.rs)
# with DuckDB, never with Weir. `--check` compares instead of writing (exit 1 on a difference).
#
#   crates/weir-sql/tests/sql/regenerate.sh            # rewrite input.* and expected.csv
#   crates/weir-sql/tests/sql/regenerate.sh --check    # verify the committed files
#   crates/weir-sql/tests/sql/regenerate.sh CASE ...   # only these cases
#
# DuckDB comes from PyPI, pinned in .ci/duckdb-version, into a virtual environment outside the work tree
# (WEIR_SQL_VENV, default ~/.cache/weir-sql-duckdb-venv).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The one DuckDB version of every oracle in the repository (examples/oracle/check.sh too).
duckdb_version="$(tr -d '[:space:]' <"$here/../../../../.ci/duckdb-version")"
venv="${WEIR_SQL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/weir-sql-duckdb-venv}"
if ! "$venv/bin/python" -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$duckdb_version')" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "duckdb==$duckdb_version"
fi
exec "$venv/bin/python" "$here/generate.py" "$@"
