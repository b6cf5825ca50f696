"""Speed of the detector's evidence channels: this checkout against another, interleaved.

    PYTHONPATH=build/pythonpath python tools/evidence_speed.py [OTHER_CHECKOUT]
        [--tile 640] [--rounds 15] [--threads 2]

Times the evidence channels of one random 5-channel tile (default: a 512 px core with its
64 px margins) on the area that the network's convolutions need (the tile less 20 px at
each side), as ``anomaly:detect`` computes them: ``windowed_evidence`` where the checkout
has it, else ``evidence_channels`` of that area and the 15 px around it. This checkout
and ``OTHER_CHECKOUT/model/nn/evidence.py`` (e.g. a ``git worktree`` of an older commit) are
called in turn in every round so that other load on the machine affects them alike;
prints the median and fastest milliseconds of each and the largest difference of their
channels.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch

from anomaly_detector.model.nn import evidence
from anomaly_detector.model.nn.features import INPUT_CHANNELS
from anomaly_detector.model.nn.network import CONV_RECEPTIVE_RADIUS

MARGIN = 64  # the detector's default tile margin


def other_evidence(checkout: Path):
    """``model/nn/evidence.py`` of another checkout, imported beside this package's (its
    relative imports resolve to this checkout's modules)."""
    spec = importlib.util.spec_from_file_location(
        "anomaly_detector.model.nn.evidence_other", checkout / "model" / "nn" / "evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def area_evidence(module, tile: torch.Tensor) -> torch.Tensor:
    """The evidence channels of ``tile``'s convolution area, as ``module`` computes them."""
    size, inset = tile.shape[-1], MARGIN - CONV_RECEPTIVE_RADIUS
    if hasattr(module, "windowed_evidence"):
        return module.windowed_evidence(tile, (inset, size - inset, inset, size - inset))
    reach, edge = inset - module.EVIDENCE_RADIUS, module.EVIDENCE_RADIUS
    channels = module.evidence_channels(tile[..., reach:size - reach, reach:size - reach])
    return channels[..., edge:-edge, edge:-edge]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, nargs="?")
    parser.add_argument("--tile", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    versions = {"this checkout": evidence}
    if args.other:
        versions[str(args.other)] = other_evidence(args.other)
    tile = torch.randn(1, INPUT_CHANNELS, args.tile, args.tile,
                       generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in versions}
    with torch.inference_mode():
        outputs = {name: area_evidence(module, tile) for name, module in versions.items()}
        for _ in range(args.rounds):
            for name, module in versions.items():
                start = time.perf_counter()
                area_evidence(module, tile)
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name}: median {1000 * statistics.median(values):.1f} ms, fastest "
              f"{1000 * min(values):.1f} ms ({args.tile} px tile, {args.threads} threads, "
              f"{args.rounds} rounds)")
    if args.other:
        first, second = outputs.values()
        print(f"largest difference of the channels: {float((first - second).abs().max()):.2g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
