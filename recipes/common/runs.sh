# Shared by every recipe's run.sh (sourced first thing, before any cd):
#   user_path PATH  PATH as the user gave it, absolute: a relative path is relative to the directory the recipe
#                   was called from, whatever directory the recipe works in (empty stays empty)
#   data_key PATH   the name of PATH (less .zip, .tar.gz, .tgz) and the first 8 hex digits of the SHA-1 of its
#                   absolute path: a recipe's default experiment folder for that data set, which no other data
#                   set (another folder of the same name) shares
# What each stage of a run is built from is recorded beside its output and checked on a rerun by seqvq itself
# (seqvq/train/stamps.py, `seqvq train`); a recipe's --force is passed on to them.
caller_dir=$PWD
user_path() {
  if [ -n "$1" ]; then (cd "$caller_dir" && realpath -m -s -- "$1"); fi
}
data_key() {
  local path name
  path=$(user_path "$1")
  name=$(basename -- "$path")
  name=${name%.zip} && name=${name%.tar.gz} && name=${name%.tgz}
  printf '%s_%s\n' "$name" "$(printf '%s' "$path" | sha1sum | cut -c1-8)"
}
