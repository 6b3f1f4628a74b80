#!/usr/bin/env bash
# libFuzzer over the gateway's parsers: each target in Tests/Fuzz/Targets is compiled with the
# sources it fuzzes (swiftc -sanitize=fuzzer,address) and run from its committed corpus in
# Tests/Fuzz/corpus/<target>; what it finds new goes to a temporary folder, not the corpus.
# A crash, a leak or an assertion fails the run and leaves the input in .build/fuzz/<target>-crash-*.
# Usage: scripts/fuzz.sh [SECONDS per target, default 10] [TARGET ...]   (`make fuzz` runs long)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
seconds=${1:-10}
shift || true
json="Sources/Comfy/Support/JSONParser.swift Sources/Comfy/Support/JSONValue.swift Sources/Comfy/Support/JSONWriter.swift"
declare -A sources=(
  [json]="$json"
  [multipart]="Sources/GatewayApp/HTTP/MultipartForm.swift Tests/Fuzz/Targets/APIErrorStub.swift"
  [image_probe]="Sources/Comfy/Sketch/ImageProbe.swift Sources/Comfy/Sketch/ImageProbe+FirstPicture.swift"
  [dotenv]="Sources/GatewayApp/Configuration/DotEnv.swift"
  [comfy_event]="Sources/Comfy/Protocol/ComfyEvent.swift Sources/Comfy/Protocol/ComfyBinaryFrame.swift $json"
)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(json multipart image_probe dotenv comfy_event)
out="$here/.build/fuzz"
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gw-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
  [ -n "${sources[$target]:-}" ] || { echo "fuzz.sh: no target $target" >&2; exit 2; }
  # shellcheck disable=SC2086
  swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name "Fuzz_$target" \
    ${sources[$target]} "Tests/Fuzz/Targets/$target.swift" -o "$out/$target" 2>"$work/$target.build.log" || {
      cat "$work/$target.build.log" >&2
      exit 1
    }
  mkdir -p "$work/$target"
  echo "fuzz.sh: $target for ${seconds}s"
  "$out/$target" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$out/$target-" "$work/$target" "Tests/Fuzz/corpus/$target" 2>"$work/$target.log" || {
      tail -40 "$work/$target.log" >&2
      echo "fuzz.sh: $target failed; the input is in $out/$target-*" >&2
      exit 1
    }
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log")
  echo "  $target: ${runs:-?} inputs, no crash"
done
