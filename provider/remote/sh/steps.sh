# shellcheck shell=sh
# Runs several steps in one exec session (shellSteps.ts runSteps): one round trip
# instead of one per step. Arguments: a marker, then per step its text (a shipped
# script with its prelude, or a quoted command), its number of arguments, the bytes
# of stdin it takes ("none": /dev/null), whether a failure lets the next steps run
# ("yes"), and its arguments. A step runs as `sh -c TEXT bpfleet ARGS...`, exactly
# as it would alone; the eval below only ever sees "${1}" "${2}" ... references.
# Each step's output is framed by marker lines ("@@MARKER K" before, "@@MARKER K
# CODE" after, on a line of its own); its stderr follows "@@MARKER K" there. The
# steps' stdins arrive one after the other on ours: head -c reads exactly a step's
# bytes (coreutils reads no further), and what a step leaves unread is drained, so
# the next step starts at its own bytes. The first failing step ends the run.
marker=$1
shift
k=0
while [ $# -gt 0 ]; do
  k=$((k + 1))
  # shellcheck disable=SC2034 # text is read through the eval
  text=$1 n=$2 bytes=$3 keep_going=$4
  shift 4
  refs="" i=1
  while [ "$i" -le "$n" ]; do refs="$refs \"\${$i}\""; i=$((i + 1)); done
  printf '@@%s %s\n' "$marker" "$k"
  printf '@@%s %s\n' "$marker" "$k" >&2
  if [ "$bytes" = none ]; then
    eval "sh -c \"\$text\" bpfleet $refs" </dev/null
  else
    head -c "$bytes" | { eval "sh -c \"\$text\" bpfleet $refs"; r=$?; cat >/dev/null; exit "$r"; }
  fi
  r=$?
  printf '\n@@%s %s %s\n' "$marker" "$k" "$r"
  shift "$n"
  [ "$r" = 0 ] || [ "$keep_going" = yes ] || exit "$r"
done
exit 0
