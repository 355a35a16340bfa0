#!/usr/bin/env bash
# Runs one benchmark on an earlier commit and on the working tree, back to back, round after
# round, so both see the same machine: `bench/compare.sh REV ROUNDS bench/read_path.py --rounds 1`.
# The earlier commit is checked out (a git worktree) with its own environment under
# .bench-before/<rev>/, made once. Each round prints both versions' output, labelled.
set -euo pipefail
rev=$(git rev-parse --short "$1")
rounds=$2
shift 2
root=$(git rev-parse --show-toplevel)
before="$root/.bench-before/$rev"
if [ ! -d "$before" ]; then
    git worktree add --detach "$before" "$rev" >/dev/null
fi
make -C "$before" sync >/dev/null
make -C "$root" sync >/dev/null
for round in $(seq 1 "$rounds"); do
    for side in before after; do
        if [ "$side" = before ]; then tree=$before; else tree=$root; fi
        echo "=== round $round, $side ($( [ "$side" = before ] && echo "$rev" || echo "working tree"))"
        (cd "$tree" && .venv/bin/python "$@")
    done
done
