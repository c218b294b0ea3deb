#!/usr/bin/env bash
# Builds the fuzzers' seed corpora from the project's own files (samples/, mappings/, jobs/)
# into fuzz/corpus/<target>/. Run from the repository root after `sluice run carriers` and
# `sluice run airports`: their small Parquet tables are the Parquet seeds. See
# docs/development.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=fuzz/corpus
mkdir -p "$out/config" "$out/csv_reader" "$out/file_source"

# config: a kind byte (0 project, 1 model, 2 mapping, 3 job), then the file.
seed_config() { { printf "\\x$(printf %02x "$1")"; cat "$2"; } > "$out/config/$(basename "$2" .toml)-$1"; }
seed_config 0 sluice.toml
for f in mappings/canonical/*.toml; do seed_config 1 "$f"; done
for f in mappings/*.toml; do seed_config 2 "$f"; done
for f in jobs/*.toml; do seed_config 3 "$f"; done

# csv_reader: delimiter, quote, flags (header, batch size, max_record_bytes), then the text.
for f in samples/nycflights13/*.csv.gz; do
  name=$(basename "$f" .csv.gz)
  { printf '\x00\x00\x13'; (zcat "$f" 2>/dev/null || true) | head -c 4000; } > "$out/csv_reader/$name"
done
printf '\x00\x00\x01a,b\n1,"x\ny"\n2,"q""r"\n3,5'"'"'11"\n,\n"unclosed\n' > "$out/csv_reader/quoting"

# file_source: a format byte (even: Parquet, odd: NDJSON), then the file.
i=0
for f in $(find warehouse -name '*.parquet' -size -64k 2>/dev/null | head -5); do
  { printf '\x00'; cat "$f"; } > "$out/file_source/parquet-$i"; i=$((i + 1))
done
printf '\x01{"id": "a"}\n{"id": 2}\n{"id": null}\n{bad\n' > "$out/file_source/ndjson"
echo "seeds: $(ls "$out/config" | wc -l) config, $(ls "$out/csv_reader" | wc -l) csv_reader, $(ls "$out/file_source" | wc -l) file_source"
