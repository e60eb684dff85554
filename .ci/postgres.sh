# shellcheck shell=bash
# Start a throwaway PostgreSQL cluster for the storage tests and export TEST_POSTGRES_URL.
# Source it from .ci/run after Debian's `postgresql` package is installed; it installs nothing.
#
#   . .ci/postgres.sh      # exports TEST_POSTGRES_URL, defines ci_postgres_stop
#   ...run the tests...
#   ci_postgres_stop       # also runs on EXIT when the sourcing shell has no EXIT trap of its own
#
# The cluster lives in a temporary directory, listens on 127.0.0.1 only, trusts local
# connections and runs without fsync (the tests never crash the server itself). initdb refuses
# to run as root, so as root it runs as the `postgres` user.

ci_postgres_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$ci_postgres_bin" ] || [ ! -x "$ci_postgres_bin/initdb" ]; then
    echo "postgres.sh: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)" >&2
    return 1 2>/dev/null || exit 1
fi

CI_POSTGRES_DIR=$(mktemp -d /tmp/steering-ci-pg.XXXXXX)
ci_postgres_as=()
if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$CI_POSTGRES_DIR"
    ci_postgres_as=(runuser -u postgres --)
fi

ci_postgres_stop() {
    if [ -f "$CI_POSTGRES_DIR/data/postmaster.pid" ]; then
        "${ci_postgres_as[@]}" "$ci_postgres_bin/pg_ctl" -D "$CI_POSTGRES_DIR/data" \
            -m immediate -w stop >/dev/null 2>&1
    fi
    rm -rf "$CI_POSTGRES_DIR"
}

"${ci_postgres_as[@]}" "$ci_postgres_bin/initdb" -D "$CI_POSTGRES_DIR/data" -U postgres -A trust \
    -E UTF8 --no-sync >"$CI_POSTGRES_DIR/initdb.log" 2>&1 || {
    echo "postgres.sh: initdb failed:" >&2
    cat "$CI_POSTGRES_DIR/initdb.log" >&2
    ci_postgres_stop
    return 1 2>/dev/null || exit 1
}

# A random high port; another one if something already listens there.
ci_postgres_port=""
for _ in 1 2 3 4 5; do
    candidate=$((20000 + RANDOM % 20000))
    if "${ci_postgres_as[@]}" "$ci_postgres_bin/pg_ctl" -D "$CI_POSTGRES_DIR/data" \
        -l "$CI_POSTGRES_DIR/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $candidate -k $CI_POSTGRES_DIR -c fsync=off" \
        start >/dev/null 2>&1; then
        ci_postgres_port=$candidate
        break
    fi
done
if [ -z "$ci_postgres_port" ]; then
    echo "postgres.sh: the server did not start:" >&2
    cat "$CI_POSTGRES_DIR/server.log" >&2
    ci_postgres_stop
    return 1 2>/dev/null || exit 1
fi

export TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$ci_postgres_port/postgres"
if [ -z "$(trap -p EXIT)" ]; then
    trap ci_postgres_stop EXIT
fi
echo "postgres.sh: PostgreSQL $("$ci_postgres_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$ci_postgres_port"
