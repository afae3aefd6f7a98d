# shell_words WORD...: the words on one line, each quoted for the shell where it needs it (sourced by driver.sh
# for --print-train and by table_driver.sh for the command in a table's note).
shell_words() {
  local word line=""
  for word in "$@"; do
    if [[ ! $word =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then word="'${word//\'/\'\\\'\'}'"; fi
    line+="${line:+ }$word"
  done
  echo "$line"
}
