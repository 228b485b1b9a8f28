# shellcheck shell=sh
# The last piece of a resource's restore.sh: "prog is pinned" means "restored completely".
# shellcheck disable=SC2154 # DIR: assigned at the top of restore.sh (bootRestore.ts)
mv -f -- "$DIR/prog_boot" "$DIR/prog"
say "restored"
