#!/bin/sh
# The shared library exports mevb_* symbols and nothing else.
set -eu
lib="$1"
syms=$(nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' | grep -v '^$')
[ -n "$syms" ] || { echo "no exported symbols in $lib"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -v '^mevb_' | grep -v '^MEVBACKUP_' || true)
if [ -n "$bad" ]; then
  echo "symbols other than mevb_* exported by $lib:"; printf '%s\n' "$bad"; exit 1
fi
printf '%s\n' "$syms" | grep -qx mevb_repo_backup_postgres || { echo "mevb_repo_backup_postgres missing"; exit 1; }
for f in mevb_pipeline_run mevb_storage_open mevb_repo_put_artifact mevb_repo_get_artifact; do
  printf '%s\n' "$syms" | grep -qx "$f" || { echo "$f missing"; exit 1; }
done
for f in mevb_source_new_pg_dump mevb_sink_new_pg_restore mevb_source_new_files_tar mevb_sink_new_extract \
         mevb_source_new_redis_rdb mevb_sink_new_redis_offline mevb_sink_new_redis_live; do
  printf '%s\n' "$syms" | grep -qx "$f" || { echo "$f missing"; exit 1; }
done
echo "$(printf '%s\n' "$syms" | wc -l) symbols, all mevb_*"
