"""Throughput and memory benchmark of anomaly:detect, anomaly:rx and anomaly:polygonize
(``make bench``).

Generates its own rasters in a scratch folder (build/bench/, removed afterwards) and
measures two paths, each run in a fresh process:

* ``api``: the exact core calls of the algorithms (``detect_raster`` and
  ``rx_score_raster``; the detector once warmed up on a 256 x 256 corner, as in a
  long-lived QGIS session); ``seconds`` is the call alone, ``startup_s`` the rest of the
  child's wall time (imports, warm-up, exit); peak RSS is the child's, from ``os.wait4``
  in a small launcher process;
* ``qgis_process``: the user's command line, whole (see tools/bench_qgis.py): realistic
  GeoTIFF layouts, default parameters (polygons written), start-up measured on a 1 x 1
  raster and subtracted from the rate, peak RSS of the child from ``os.wait4``.

Rows carry ``case``, ``algorithm``, ``path``, ``seconds``, ``startup_s``, ``mp_per_s``
and ``peak_rss_mb``. Prints a table and writes bench/results.json.

    python tools/bench.py [--quick] [--paths api qgis_process] [--cases NAME ...] [--keep]
                          [--out bench/results.json]

``--quick`` skips the > 3 GB raster (c) (its rows are kept from the previous results
file, marked ``reused_from``) and the 16384² linearity point, and runs the
``qgis_process`` cases on rasters of a quarter of the side. ``--cases NAME ...``
measures the cases named again (API: a, a-t1024, a-s2, a-s4, b, b-s2, b-s4, noise, c;
``qgis_process``: see ``bench_qgis.CASES``; on the ``--paths`` given) and keeps every
other row of the results file (marked ``reused_from``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Optional, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPATH = REPO / "build" / "pythonpath"
if str(PYPATH) not in sys.path:  # after PYTHONPATH: another checkout given there wins
    sys.path.append(str(PYPATH))

import numpy as np  # noqa: E402
from bench_qgis import (CASES, launched, launcher_peak_rss_mb, qgis_process_rows,  # noqa: E402
                        write_case)
from bench_rasters import write_scene  # noqa: E402
from osgeo import gdal  # noqa: E402

gdal.UseExceptions()

# CPU time-per-pixel rows must stay within this of each other (linear cost)
LINEARITY_TOLERANCE = 0.20
REFERENCE_MP_PER_S = (0.025, 0.035)  # reference 29 M-parameter network on this machine's 2 cores
REPEAT = 2  # runs per case up to 50 MP (the fastest is kept)
REPEAT_SHORT = 5  # runs per API case up to 5 MP (under a second or two each: noise)


# --------------------------------------------------------------------------
# one measurement in a fresh process

def child(kind: str, src: str, dst: str, memory_mb: float | None, tile_size: int | None,
          scale: int = 1) -> None:
    from anomaly_detector.model.raster import memory
    memory.limit_gdal_cache(memory_mb)
    if kind == "detect":  # imported and warmed up before the clock starts, as in a QGIS
        # session that has run it once (thread pools, oneDNN kernels)
        from anomaly_detector.model.nn.detector import detect_raster
        warm_up(src, dst, detect_raster, scale)
    else:
        from anomaly_detector.model.classic.rx import rx_score_raster
    start = time.perf_counter()
    if kind == "detect":
        kwargs = {} if tile_size is None else {"tile_size": tile_size}
        detect_raster(src, dst, device="cpu", memory_mb=memory_mb, scale=scale, **kwargs)
    else:
        rx_score_raster(src, dst, memory_mb=memory_mb)
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"seconds": seconds}))


def warm_up(src: str, dst: str, detect_raster, scale: int) -> None:
    """Score a 256 x 256 corner of ``src`` once, as a long-lived QGIS process already has."""
    corner, scores = f"{dst}.warm.tif", f"{dst}.warm_scores.tif"
    gdal.Translate(corner, src, srcWin=[0, 0, 256, 256])
    try:
        detect_raster(corner, scores, device="cpu", scale=scale)
    finally:
        for path in (corner, scores):
            if os.path.exists(path):
                os.remove(path)


def measure(kind: str, src: Path, dst: Path, memory_mb: float | None = None,
            tile_size: int | None = None, scale: int = 1) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(src), str(dst),
           "--memory-mb", str(memory_mb or 0), "--tile-size", str(tile_size or 0),
           "--scale", str(scale)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PYPATH)] + sys.path[1:])}
    start = time.perf_counter()
    # through the small launcher: a child forked from this process would count the
    # benchmark's own pages in its peak (see bench_qgis.LAUNCHER)
    run = subprocess.run(launched(cmd), capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"{kind} on {src.name} failed:\n{run.stderr[-3000:]}")
    line = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    return {**result, "peak_rss_mb": launcher_peak_rss_mb(run.stderr),
            "startup_s": wall - result["seconds"]}


# --------------------------------------------------------------------------
# machine figures

def cpu_model() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def interleaved_medians(scorers: dict, tile, rounds: int = 7) -> dict:
    """Median seconds per call of each scorer on ``tile``, the scorers called in turn in
    every round (other load on the machine then affects all of them alike)."""
    import torch
    times = {name: [] for name in scorers}
    with torch.inference_mode():
        for scorer in scorers.values():
            scorer(tile)
        for _ in range(rounds):
            for name, scorer in scorers.items():
                start = time.perf_counter()
                scorer(tile)
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def network_figures() -> dict:
    """MACs per pixel of the detector (counted from its convolutions), the machine's
    conv throughput (a large 3x3 convolution) and the detector network's own rate."""
    import torch
    from anomaly_detector.model.nn.detector import TileScorer, use_all_cores
    from anomaly_detector.model.nn.features import SpectralReduction
    from anomaly_detector.model.nn.network import build_network
    from anomaly_detector.model.nn.weights import DEFAULT_WEIGHTS, load_detector
    threads = use_all_cores()
    model = load_detector().to(memory_format=torch.channels_last)
    total = [0]

    def hook(module, inputs, output):
        total[0] += (module.in_channels // module.groups * module.out_channels
                     * module.kernel_size[0] * module.kernel_size[1] * output[0, 0].numel())

    side = 512
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model.score(torch.zeros(1, model.config["in_channels"], side, side))
    for h in handles:
        h.remove()
    macs_per_pixel = total[0] / side / side

    def rate(fn, x, repeat=3):
        with torch.inference_mode():
            fn(x)
            start = time.perf_counter()
            for _ in range(repeat):
                fn(x)
            return (time.perf_counter() - start) / repeat

    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(1, 64, 512, 512).contiguous(memory_format=torch.channels_last)
    conv_gmacs = 9 * 64 * 64 * 512 * 512 / rate(conv, x) / 1e9
    bands = 3
    reduction = SpectralReduction.fit(np.zeros(bands), np.eye(bands))
    # the shipped weights as stored, without zeroing the negligible ones (see
    # weights.zero_negligible_weights): their denormal products slow the CPU down
    stored = build_network(model.config).eval()
    stored.load_state_dict(torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True))
    # the same network (or ensemble) without the classic evidence channels (speed only,
    # random weights): what the evidence channels cost
    variant = build_network({**model.config, "evidence": False}).eval()
    scorers = {name: TileScorer(net, reduction, "cpu")
               for name, net in (("shipped", model), ("stored", stored), ("variant", variant))}
    # the default arithmetic (bfloat16 convolutions where native) against float32
    scorers["float32"] = TileScorer(model, reduction, "cpu", precision="float32")
    tile = np.random.default_rng(0).normal(size=(bands, 644, 644)).astype(np.float32)
    seconds = interleaved_medians(scorers, tile)
    net_mps, stored_mps, variant_mps, float32_mps = (
        644 * 644 / seconds[name] / 1e6 for name in ("shipped", "stored", "variant", "float32"))
    t224 = np.random.default_rng(0).normal(size=(bands, 224, 224)).astype(np.float32)
    s224 = rate(lambda t: scorers["shipped"](t), t224, repeat=10)
    return {"torch_threads": threads, "macs_per_pixel": macs_per_pixel,
            "conv3x3_64x64_gmac_per_s": conv_gmacs,
            "network_644px_tile_mp_per_s": net_mps,
            "network_precision": scorers["shipped"].precision,
            "network_float32_644px_tile_mp_per_s": float32_mps,
            "network_without_evidence_644px_tile_mp_per_s": variant_mps,
            "network_negligible_weights_kept_644px_tile_mp_per_s": stored_mps,
            # float32 against the float32 convolution above
            "network_gmac_per_s": float32_mps * macs_per_pixel / 1e3,
            "network_fraction_of_conv_peak": float32_mps * macs_per_pixel / 1e3 / conv_gmacs,
            "tile_224px_forward_ms": s224 * 1e3,
            "tile_224px_mp_per_s": 224 * 224 / s224 / 1e6,
            "reference_network_mp_per_s": list(REFERENCE_MP_PER_S)}


def training_running() -> bool:
    run = subprocess.run(["pgrep", "-f", "model.training.train"], capture_output=True, text=True)
    return bool(run.stdout.strip())


# --------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "results.json"))
    parser.add_argument("--scratch", default=str(REPO / "build" / "bench"))
    parser.add_argument("--quick", action="store_true",
                        help="skip the > 3 GB raster (c) and the 16384² linearity point; "
                             "qgis_process cases at 1/4 side")
    parser.add_argument("--keep", action="store_true", help="keep the scratch rasters")
    parser.add_argument("--cases", nargs="+", metavar="NAME",
                        help="measure only these cases (API cases such as b, b-s2, and "
                             "qgis_process cases such as spectra-band, on the --paths given); "
                             "the other rows of --out are kept, marked reused_from")
    parser.add_argument("--paths", nargs="+", choices=("api", "qgis_process"),
                        default=["api", "qgis_process"],
                        help="measure the Python API, whole qgis_process runs, or both")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SRC", "DST"), help=argparse.SUPPRESS)
    parser.add_argument("--memory-mb", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tile-size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.memory_mb or None, args.tile_size or None, args.scale)
        return 0

    from anomaly_detector.model.raster import memory
    previous = {}
    if (args.quick or args.cases) and Path(args.out).is_file():  # rows not measured again
        previous = json.loads(Path(args.out).read_text())
    scratch = Path(args.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    busy_before = training_running()
    from anomaly_detector.model.nn.fused import convolution_dtype, precision_name
    results = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                           "python": platform.python_version(), "gdal": gdal.__version__,
                           # anomaly:detect's default arithmetic here (PRECISION auto)
                           "detector_precision": precision_name(convolution_dtype("auto"))},
               "memory_setting_mb": memory.memory_budget() / 2 ** 20,
               "runs_per_case": f"fastest of {REPEAT_SHORT} up to 5 MP through the API, of "
                                f"{REPEAT} up to 50 MP, else 1",
               "rows": []}
    rows = results["rows"]

    def case(name, kind, src, **kw):
        info = gdal.Open(str(src))
        pixels = info.RasterXSize * info.RasterYSize
        shape = f"{info.RasterCount}x{info.RasterYSize}x{info.RasterXSize}"
        dtype = gdal.GetDataTypeName(info.GetRasterBand(1).DataType)
        info = None
        # the fastest of several runs for the small cases: less noise from other processes
        repeat = REPEAT_SHORT if pixels <= 5e6 else REPEAT if pixels <= 50e6 else 1
        runs = [measure(kind, src, scratch / f"{name}_{kind}.tif", **kw) for _ in range(repeat)]
        r = min(runs, key=lambda run: run["seconds"])
        r["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
        row = {"case": name, "algorithm": f"anomaly:{kind}", "path": "api",
               "raster": f"{shape} {dtype}", "megapixels": pixels / 1e6,
               "seconds": r["seconds"], "startup_s": r["startup_s"],
               "mp_per_s": pixels / 1e6 / r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
               "us_per_pixel": r["seconds"] / pixels * 1e6}
        row["tile_size"] = kw.get("tile_size") or (512 if kind == "detect" else 1024)
        row["memory_mb"] = kw.get("memory_mb") or memory.memory_budget() / 2 ** 20
        row["scale"] = kw.get("scale", 1)
        rows.append(row)
        print(f"{name:<10} {row['algorithm']:<15} {row['raster']:<24} "
              f"{row['mp_per_s']:8.2f} MP/s {row['seconds']:8.1f} s "
              f"{row['peak_rss_mb']:8.0f} MB peak", flush=True)
        return row

    try:
        print("machine:", results["machine"], flush=True)
        if "api" in args.paths:
            api_cases(case, scratch, results, quick=args.quick, names=args.cases)
        if "qgis_process" in args.paths:
            rows.extend(qgis_process_rows(scratch, PYPATH, quick=args.quick, repeat=REPEAT,
                                          keep=args.keep, report=print_qgis_process_row,
                                          names=args.cases))
        if args.cases:  # the new rows in place of the old ones, the others kept
            key = lambda r: (r["case"], r["algorithm"], r.get("path", "api"))  # noqa: E731
            fresh = {key(r): r for r in rows}
            merged = [fresh.pop(key(r), None) or
                      dict(r, reused_from=r.get("reused_from", previous.get("date")))
                      for r in previous.get("rows", [])]
            rows[:] = merged + list(fresh.values())
            for name in ("network", "linearity", "c_tile_invariance"):
                if name in previous:
                    results[name] = previous[name]
        if "api" in args.paths and args.quick:
            rows.extend(dict(r, reused_from=previous.get("date")) for r in
                        previous.get("rows", []) if r.get("case") == "c")
            if "c_tile_invariance" in previous:
                results["c_tile_invariance"] = previous["c_tile_invariance"]
        elif "api" in args.paths and (not args.cases or "c" in args.cases):
            large_case(case, scratch, results)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    results["training_running"] = busy_before or training_running()
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if "linearity" in results:
        linearity = results["linearity"]
        print(f"linearity (us/pixel at {', '.join(f'{s}^2' for s in linearity['sides'])}): "
              f"{', '.join(f'{v:.3f}' for v in linearity['us_per_pixel'])} "
              f"(max/min {linearity['max_over_min']:.2f})")
    if results["training_running"]:
        print("note: a training process was running during the benchmark (numbers depressed)")
    print(f"wrote {args.out}")
    return 0


def print_qgis_process_row(row: dict) -> None:
    workers = (f" (workers <= {row['worker_peak_rss_mb']:.0f} MB)"
               if "worker_peak_rss_mb" in row else "")
    print(f"{row['case']:<14} {row['algorithm']:<19} {row['path']:<12} {row['raster']:<20} "
          f"{row['layout']:<36} {row['mp_per_s']:7.2f} MP/s {row['seconds']:7.1f} s "
          f"(start-up {row['startup_s']:.1f} s) {row['peak_rss_mb']:6.0f} MB peak{workers}"
          + (f"; {row['log']}" if row.get("log") else ""), flush=True)


def api_cases(case, scratch: Path, results: dict, quick: bool = False,
              names: Optional[Sequence[str]] = None) -> None:
    """The Python API cases: linearity (1024² to 16384², the largest skipped by ``quick``),
    (a) and (b) at every analysis scale, and the file of the ``noise`` qgis_process case
    (the API and qgis_process on the same file); with ``names``, only the cases named
    (without the network figures and the linearity summary)."""
    def wanted(name: str) -> bool:
        return not names or name in names

    if not names:
        results["network"] = net = network_figures()
        print(f"network: {net['macs_per_pixel']:.0f} MAC/pixel; conv 3x3 64->64 "
              f"{net['conv3x3_64x64_gmac_per_s']:.1f} GMAC/s; detector network in float32 "
              f"{net['network_gmac_per_s']:.1f} GMAC/s "
              f"({100 * net['network_fraction_of_conv_peak']:.0f} % of it); 224 px tile "
              f"{net['tile_224px_forward_ms']:.1f} ms ({net['tile_224px_mp_per_s']:.2f} MP/s; "
              f"644 px tile {net['network_644px_tile_mp_per_s']:.2f} MP/s "
              f"({net['network_precision']}; float32 "
              f"{net['network_float32_644px_tile_mp_per_s']:.2f} MP/s), without the "
              f"evidence channels {net['network_without_evidence_644px_tile_mp_per_s']:.2f} "
              f"MP/s, with the negligible weights kept "
              f"{net['network_negligible_weights_kept_644px_tile_mp_per_s']:.2f} MP/s; "
              f"reference network {REFERENCE_MP_PER_S[0]}-{REFERENCE_MP_PER_S[1]} MP/s)",
              flush=True)
        for side in (1024, 2048) if quick else (1024, 2048, 16384):
            src = write_scene(scratch / f"lin_3b_u8_{side}.tif", 3, "uint8", side, side)
            case(f"lin{side}", "detect", src)
            if side > 4096:
                src.unlink()
    rasters = [  # also the speed side of the speed-vs-AUC curve (analysis scales)
        (lambda: write_scene(scratch / "a_3b_u8_4096.tif", 3, "uint8", 4096, 4096),
         [("a", "detect", {}), ("a-t1024", "detect", {"memory_mb": 1536, "tile_size": 1024}),
          ("a", "rx", {}), ("a-s2", "detect", {"scale": 2}), ("a-s4", "detect", {"scale": 4})]),
        (lambda: write_scene(scratch / "b_200b_i16_1024.tif", 200, "int16", 1024, 1024,
                             options=("TILED=YES", "INTERLEAVE=BAND")),
         [("b", "detect", {}), ("b", "rx", {}), ("b-s2", "detect", {"scale": 2}),
          ("b-s4", "detect", {"scale": 4})])]
    for write, cases in rasters:
        chosen = [c for c in cases if wanted(c[0])]
        if chosen:
            src = write()
            for name, kind, kw in chosen:
                case(name, kind, src, **kw)
    noise_case = next(c for c in CASES if c.name == "noise")
    if wanted("noise"):
        noise = write_case(scratch / "noise_api.tif", noise_case, noise_case.side)
        for algorithm in noise_case.algorithms:
            case("noise", algorithm, noise)
    if names:
        return
    rows = results["rows"]
    lin = sorted((r for r in rows if r["algorithm"] == "anomaly:detect" and
                  r["case"] in ("lin1024", "lin2048", "a", "lin16384")),
                 key=lambda r: r["megapixels"])
    per_pixel = [r["us_per_pixel"] for r in lin]
    results["linearity"] = {
        "sides": [int(math.sqrt(r["megapixels"] * 1e6)) for r in lin],
        "us_per_pixel": per_pixel,
        "max_over_min": max(per_pixel) / min(per_pixel),
        "within_20_percent": max(per_pixel) / min(per_pixel) <= 1 + LINEARITY_TOLERANCE}


def large_case(case, scratch: Path, results: dict) -> None:
    """(c): a > 3 GB raster, and the same scores with a larger tile and memory setting."""
    from anomaly_detector.model.raster import memory
    side = 20480
    t0 = time.perf_counter()
    c = write_scene(scratch / "c_4b_u16_20480.tif", 4, "uint16", side, side,
                    options=("TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256",
                             "BIGTIFF=YES", "COMPRESS=NONE"))
    size_gb = c.stat().st_size / 1e9
    print(f"(c) written: {size_gb:.2f} GB in {time.perf_counter() - t0:.0f} s", flush=True)
    rc = case("c", "detect", c)
    rc["file_gb"] = size_gb
    case("c", "rx", c)["file_gb"] = size_gb
    # same scores with a larger tile and memory setting, on a 4096 x 4096 crop
    crop = scratch / "c_crop.tif"
    gdal.Translate(str(crop), str(c), srcWin=[8192, 8192, 4096, 4096],
                   creationOptions=["TILED=YES"])
    small = scratch / "c_crop_default.tif"
    large = scratch / "c_crop_large.tif"
    measure("detect", crop, small)
    measure("detect", crop, large, memory_mb=6144, tile_size=2048)
    diff = 0.0
    sa, la = gdal.Open(str(small)), gdal.Open(str(large))
    for y in range(0, 4096, 512):
        d = np.abs(sa.ReadAsArray(0, y, 4096, 512) - la.ReadAsArray(0, y, 4096, 512))
        diff = max(diff, float(d.max()))
    sa = la = None
    results["c_tile_invariance"] = {
        "window": "4096 x 4096 crop of (c) at (8192, 8192)",
        "default": f"tile 512, memory {memory.memory_budget() / 2 ** 20:.0f} MB",
        "large": "tile 2048, memory 6144 MB", "max_abs_diff": diff,
        "identical": diff < 1e-5}
    print(f"(c) crop: default vs large tile/memory max abs diff {diff:.2e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
