"""The README's performance tables, printed from ``make bench``'s results.

    python tools/bench_table.py [bench/results.json]

One Markdown table for the Python API rows and one for the whole ``qgis_process`` (and
batch entry) runs (rate = megapixels / (seconds - start-up of the same command on a 1 x 1
raster)).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results.json"


def api_label(row: dict) -> str:
    label = row["case"]
    if row.get("scale", 1) > 1:
        label += f", `SCALE` 1/{row['scale']}"
    if row["algorithm"] == "anomaly:detect" and row.get("tile_size", 512) != 512:
        label += f", tile {row['tile_size']}, memory {row['memory_mb']:.0f} MiB"
    return label + reused(row)


def reused(row: dict) -> str:
    """A mark on rows kept from an earlier run (``make bench --cases`` re-measures some)."""
    return f" (run of {row['reused_from']})" if row.get("reused_from") else ""


def api_table(rows: list[dict]) -> list[str]:
    lines = ["| Case | Algorithm | Raster | MP/s | Seconds | Peak RSS |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {api_label(row)} | `{row['algorithm']}` | {row['raster']} | "
                     f"{row['mp_per_s']:.2f} | {row['seconds']:.1f} | "
                     f"{row['peak_rss_mb']:.0f} MB |")
    return lines


def qgis_process_table(rows: list[dict]) -> list[str]:
    lines = ["| Case | Algorithm | Raster | Layout | Whole run (s) | Start-up (s) | MP/s | "
             "Peak RSS | Groups / polygons |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        polygons = f"{row['groups']} / {row['polygons']}" if "groups" in row else "-"
        case, peak = row["case"] + reused(row), f"{row['peak_rss_mb']:.0f} MB"
        if row["path"] == "batch":
            case += ", batch entry (2 workers)"
            peak += f" (each worker <= {row['worker_peak_rss_mb']:.0f} MB)"
        lines.append(f"| {case} | `{row['algorithm']}` | {row['raster']} | "
                     f"{row['layout']} | {row['seconds']:.1f} | {row['startup_s']:.1f} | "
                     f"{row['mp_per_s']:.2f} | {peak} | {polygons} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results = json.loads(Path(argv[0] if argv else RESULTS).read_text())
    rows = results["rows"]
    print(f"Machine: {results['machine']}; date: {results.get('date')}; "
          f"memory setting {results['memory_setting_mb']:.0f} MiB\n")
    print("\n".join(api_table([r for r in rows if r.get("path", "api") == "api"])))
    print()
    print("\n".join(qgis_process_table([r for r in rows
                                         if r.get("path") in ("qgis_process", "batch")])))
    if "linearity" in results:
        linearity = results["linearity"]
        print("\nlinearity (us/pixel at "
              + ", ".join(f"{side}²" for side in linearity["sides"]) + "): "
              + ", ".join(f"{v:.3f}" for v in linearity["us_per_pixel"])
              + f" (max/min {linearity['max_over_min']:.2f})")
    for row in rows:  # the same file through the API and through qgis_process
        twin = next((r for r in rows if r.get("path") == "qgis_process" and
                     r["case"] == row["case"] and r["algorithm"] == row["algorithm"]), None)
        if row.get("path", "api") == "api" and twin:
            print(f"{row['case']} {row['algorithm']}: API {row['mp_per_s']:.2f} MP/s, "
                  f"qgis_process {twin['mp_per_s']:.2f} MP/s "
                  f"({abs(twin['mp_per_s'] / row['mp_per_s'] - 1) * 100:.0f} % apart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
