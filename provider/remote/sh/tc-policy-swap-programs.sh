# shellcheck shell=sh
# The TcPolicy programs just loaded (DIR/progs_new) become DIR/progs; the previous
# ones stay at DIR/progs_old until the change is proven (the revert moves them back).
dir=$1
set -e
rm -rf -- "$dir/progs_old"
if [ -d "$dir/progs" ]; then mv "$dir/progs" "$dir/progs_old"; fi
mv "$dir/progs_new" "$dir/progs"
