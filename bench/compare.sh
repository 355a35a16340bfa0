#!/usr/bin/env bash
# Runs one benchmark on an earlier commit and on the working tree, back to back, round after
# round, so both see the same machine: `bench/compare.sh REV ROUNDS bench/read_path.py --rounds 1`.
# With AFTER=REV2 in the environment, the second version is that commit instead of the working
# tree (to compare two points of history while the tree has moved on). Each commit is checked
# out (a git worktree) with its own environment under .bench-before/<rev>/, made once, and runs
# its own copy of the benchmark. Each round prints both versions' output, labelled.
set -euo pipefail
root=$(git rev-parse --show-toplevel)

tree_of() {
    local rev
    rev=$(git rev-parse --short "$1")
    local tree="$root/.bench-before/$rev"
    if [ ! -d "$tree" ]; then
        git worktree add --detach "$tree" "$rev" >/dev/null
    fi
    make -C "$tree" sync >/dev/null
    echo "$tree"
}

before=$(tree_of "$1")
before_name=$(git rev-parse --short "$1")
rounds=$2
script=$3
shift 3
if [ -n "${AFTER:-}" ]; then
    after=$(tree_of "$AFTER")
    after_name=$(git rev-parse --short "$AFTER")
else
    after=$root
    after_name="working tree"
    make -C "$root" sync >/dev/null
fi
for round in $(seq 1 "$rounds"); do
    for side in before after; do
        if [ "$side" = before ]; then tree=$before name=$before_name; else tree=$after name=$after_name; fi
        echo "=== round $round, $side ($name)"
        (cd "$tree" && .venv/bin/python "$script" "$@")
    done
done
