# shellcheck shell=sh
# Prints "yes" or "no" for each path given, one a line: whether it is a file.
for f in "$@"; do if [ -f "$f" ]; then echo yes; else echo no; fi; done
