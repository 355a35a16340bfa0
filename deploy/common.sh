# shellcheck shell=bash
# Sourced by the deploy scripts (build-images.sh, rollout.sh): how they speak, stop and help.

# say WORDS: a line on stderr, after the script's name and the time (UTC), so that a slow step
# shows where the time went; stdout stays the script's answer.
say() { echo "$(basename "$0" .sh): $(date -u +%H:%M:%S) $*" >&2; }

# fail WORDS: say why, and stop with exit code 2 (a wrong call, or something missing first).
fail() { say "$*"; exit 2; }

# usage LAST: print the script's own help, its comment from line 2 to LAST, and stop.
usage() { sed -n "2,${1}s/^# \{0,1\}//p" "$0"; exit 0; }
