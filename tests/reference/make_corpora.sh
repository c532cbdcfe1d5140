#!/bin/sh
# Builds the tokenizer reference corpora from Debian's own text, deterministically (sorted inputs,
# whole lines up to a fixed byte count, valid UTF-8):
#   OUT_DIR/english.txt   the licenses in /usr/share/common-licenses
#   OUT_DIR/japanese.txt  the first lines of each Japanese page in manpages-ja's man1, roff included
# Usage: make_corpora.sh OUT_DIR
set -eu

out_dir=${1:?usage: make_corpora.sh OUT_DIR}
corpus_bytes=131072  # each corpus: at least 100 KB of whole lines
page_bytes=6144      # per Japanese page, so that the corpus spans many pages and translators

export LC_ALL=C  # byte-wise sorting and byte-wise awk length()

# Copies whole lines from stdin while their total stays within $1 bytes. Reads all of stdin, so
# that the writer never dies of SIGPIPE.
take_lines() {
  awk -v max="$1" '!full { total += length($0) + 1; if (total > max) full = 1; else print }'
}

is_utf8() { iconv -f UTF-8 -t UTF-8 "$1" >/dev/null 2>&1; }

# Fails unless the corpus reached at least 100 KB and is valid UTF-8.
check_corpus() {
  size=$(wc -c <"$1")
  if [ "$size" -lt 102400 ]; then
    echo "make_corpora.sh: $1 has only $size bytes; are common-licenses and manpages-ja installed?" >&2
    exit 1
  fi
  is_utf8 "$1" || { echo "make_corpora.sh: $1 is not valid UTF-8" >&2; exit 1; }
}

mkdir -p "$out_dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

find /usr/share/common-licenses -maxdepth 1 -type f | sort | xargs cat \
  | take_lines "$corpus_bytes" >"$out_dir/english.txt"
check_corpus "$out_dir/english.txt"

: >"$tmp/japanese.txt"
for page in $(find /usr/share/man/ja/man1 -maxdepth 1 -type f -name '*.gz' | sort); do
  zcat "$page" >"$tmp/page"
  # Skips the odd page in a legacy encoding and pages with no Japanese (bytes above 0x7F).
  is_utf8 "$tmp/page" && grep -q "$(printf '[\200-\377]')" "$tmp/page" || continue
  take_lines "$page_bytes" <"$tmp/page" >>"$tmp/japanese.txt"
  [ "$(wc -c <"$tmp/japanese.txt")" -gt "$corpus_bytes" ] && break
done
take_lines "$corpus_bytes" <"$tmp/japanese.txt" >"$out_dir/japanese.txt"
check_corpus "$out_dir/japanese.txt"
