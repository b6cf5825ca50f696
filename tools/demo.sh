#!/usr/bin/env bash
# Headless demo: score a real sample raster, turn the anomalies into polygons and
# draw a quick-look PNG. Run through `make demo` (which prepares the environment).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
SAMPLE="${SAMPLE:-resources/sample_thermal_baboons.tif}"
OUT="${OUT:-demo-output}"
THRESHOLD_ARGS=(--THRESHOLD_METHOD=0 --THRESHOLD=0.002 --MIN_AREA=4)
# float32 arithmetic: the same outputs on every machine, as the README prints them (the
# default PRECISION is faster on CPUs with native bfloat16 and within 0.007 of these:
# python tools/precision.py resources/sample_thermal_baboons.tif)
PRECISION_ARGS=(--PRECISION=1)

# do not write GDAL .aux.xml sidecars next to the sample
export GDAL_PAM_ENABLED=NO
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
export QGIS_CUSTOM_CONFIG_PATH="${QGIS_CUSTOM_CONFIG_PATH:-$PWD/build/qgis-config}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$PWD/build/xdg-runtime}"
export QGIS_PLUGINPATH="${QGIS_PLUGINPATH:-$PWD/build/pythonpath}"
SITE="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export PYTHONPATH="$QGIS_PLUGINPATH:$SITE"
mkdir -p "$OUT" "$QGIS_CUSTOM_CONFIG_PATH" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
rm -f "$OUT/score.tif" "$OUT/anomalies.gpkg" "$OUT/quicklook.png"

qgis_process.bin plugins enable anomaly_detector >/dev/null 2>&1 || true

echo "== anomaly:detect on $SAMPLE"
qgis_process.bin --json run anomaly:detect --INPUT="$SAMPLE" "${THRESHOLD_ARGS[@]}" \
    "${PRECISION_ARGS[@]}" \
    --OUTPUT_SCORE="$OUT/score.tif" --OUTPUT_POLYGONS="$OUT/anomalies.gpkg" \
    2>/dev/null > "$OUT/detect.json"
COUNT="$("$PYTHON" -c 'import json,sys; t=open(sys.argv[1]).read(); r=json.loads(t[t.index("{"):])["results"]; print(r["COUNT"], "anomalies found on device", r["DEVICE_USED"])' "$OUT/detect.json")"
rm -f "$OUT/detect.json"
"$PYTHON" tools/quicklook.py "$OUT/score.tif" "$OUT/anomalies.gpkg" "$OUT/quicklook.png" "$SAMPLE"

echo
echo "Wrote:"
for f in score.tif anomalies.gpkg quicklook.png; do
    printf '  %-24s %8s bytes\n' "$OUT/$f" "$(stat -c %s "$OUT/$f")"
done
echo "$COUNT (polygons ranked by score, see $OUT/anomalies.gpkg)."
