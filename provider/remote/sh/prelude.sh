# shellcheck shell=sh
# The shared prelude: every shipped script runs with these functions defined
# (provider/remote/script.ts puts this text in front of the script's own). Only
# definitions here, nothing that runs. Names a function uses for its own state are
# prefixed: sh functions share the script's variables.

# json_or CMD...: CMD's JSON output, or $fallback when CMD fails, so a survey always
# prints one JSON value per section.
# shellcheck disable=SC2154 # fallback is set by the caller
json_or() { out=$("$@" 2>/dev/null) && printf '%s\n' "$out" || echo "$fallback"; }

# root_dirs DIR...: makes each directory (list parents first) and checks that root
# alone can write it before anything in it is used. Root runs what is there (revert
# scripts, boot restore files, objects loaded into the kernel) and opens lock files
# there with `exec 9>`, which follows a symlink; a lock any user can open, any user
# can hold (flock needs only a read-only fd). Made 0700; one found with wider read
# bits (older bpfleet made 0755) is tightened; a symlink, a non-directory, another
# owner, or group/world write (its contents cannot be trusted) is refused, saying
# what to do.
root_dirs() {
  for _rd_dir in "$@"; do
    [ -L "$_rd_dir" ] || [ -e "$_rd_dir" ] || mkdir -m 0700 -- "$_rd_dir" 2>/dev/null || true
    if [ -L "$_rd_dir" ] || [ ! -d "$_rd_dir" ]; then
      echo "bpfleet: refusing $_rd_dir: it is a symlink or not a directory, and bpfleet keeps its locks, revert guards, objects and boot files only in directories root alone can write. Remove it and retry." >&2; return 1
    fi
    _rd_owner=$(stat -c %u -- "$_rd_dir"); _rd_mode=$(stat -c %a -- "$_rd_dir")
    if [ "$_rd_owner" != 0 ]; then
      echo "bpfleet: refusing $_rd_dir: it is owned by uid $_rd_owner, not root, and bpfleet keeps its locks, revert guards, objects and boot files only in directories root alone can write. Find out who made it, remove it and retry." >&2; return 1
    fi
    if [ $((0$_rd_mode & 022)) -ne 0 ]; then
      echo "bpfleet: refusing $_rd_dir: it is writable by group or others (mode $_rd_mode), so anything in it may have been planted. Remove it and retry; bpfleet makes it again, mode 0700." >&2; return 1
    fi
    [ "$_rd_mode" = 700 ] || chmod 0700 -- "$_rd_dir"
  done
}
