#!/bin/sh
# Applies deploy/questdb/schema.sql through QuestDB's HTTP /exec endpoint,
# one statement per request, after waiting for QuestDB to answer. Run by the
# `questdb-schema` job of deploy/compose.yaml (curl image, POSIX sh); by hand:
#   QUESTDB_URL=http://db-host:9000 sh deploy/questdb/apply-schema.sh deploy/questdb/schema.sql
# Every statement is CREATE TABLE IF NOT EXISTS: running it again is harmless.
# Exits non-zero when QuestDB refuses a statement, so adit does not start on
# a table without its DEDUP keys.
set -eu
schema="${1:-/schema.sql}"
url="${QUESTDB_URL:-http://questdb:9000}"
wait_s="${QUESTDB_WAIT_SECONDS:-120}"

waited=0
until curl -fsS -o /dev/null -G --data-urlencode 'query=SELECT 1' "$url/exec"; do
  waited=$((waited + 2))
  if [ "$waited" -ge "$wait_s" ]; then
    echo "QuestDB at $url did not answer within ${wait_s}s" >&2
    exit 1
  fi
  echo "waiting for QuestDB at $url ..."
  sleep 2
done

dir="$(mktemp -d)"
# Drop -- comments, split on ';', trim, one file per non-empty statement.
sed -e 's/--.*$//' "$schema" | awk -v dir="$dir" '
  BEGIN { RS = ";"; n = 0 }
  {
    gsub(/^[ \t\r\n]+|[ \t\r\n]+$/, "")
    if (length($0) > 0) {
      n++
      f = sprintf("%s/%03d.sql", dir, n)
      printf "%s", $0 > f
      close(f)
    }
  }'

count=0
for f in "$dir"/*.sql; do
  [ -e "$f" ] || continue
  echo "applying: $(tr '\n' ' ' < "$f" | cut -c1-70)..."
  curl -fsS -G --data-urlencode "query@$f" "$url/exec"
  echo
  count=$((count + 1))
done
rm -rf "$dir"
if [ "$count" -eq 0 ]; then
  echo "no statements in $schema" >&2
  exit 1
fi
echo "schema applied: $count statement(s)"
