"""Speed of the detector's evidence channels: this checkout against another, interleaved.

    PYTHONPATH=build/pythonpath python tools/evidence_speed.py [OTHER_CHECKOUT]
        [--tile 688] [--rounds 15] [--threads 2]

Times ``evidence_channels`` of this checkout (and of ``OTHER_CHECKOUT/model/nn/evidence.py``,
e.g. a ``git worktree`` of an older commit) on one random 5-channel tile, the versions
called in turn in every round so that other load on the machine affects them alike;
prints the median and fastest milliseconds of each and whether their channels are
bit for bit the same.
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


def other_evidence(checkout: Path):
    """``model/nn/evidence.py`` of another checkout, imported beside this package's (its
    relative imports resolve to this checkout's modules)."""
    spec = importlib.util.spec_from_file_location(
        "anomaly_detector.model.nn.evidence_other", checkout / "model" / "nn" / "evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, nargs="?")
    parser.add_argument("--tile", type=int, default=688)
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
        outputs = {name: module.evidence_channels(tile) for name, module in versions.items()}
        for _ in range(args.rounds):
            for name, module in versions.items():
                start = time.perf_counter()
                module.evidence_channels(tile)
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name}: median {1000 * statistics.median(values):.1f} ms, fastest "
              f"{1000 * min(values):.1f} ms ({args.tile} px tile, {args.threads} threads, "
              f"{args.rounds} rounds)")
    if args.other:
        first, second = outputs.values()
        same = torch.equal(first.view(torch.int32), second.view(torch.int32))
        print("channels bit for bit the same:", same)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
