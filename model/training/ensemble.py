"""Join trained networks into one ensemble weights file (the mean of their logits).

    python -m anomaly_detector.model.training.ensemble A.pt [B.pt ...] --out detector.pt

Each member is read and verified like any weights file (its card beside it); the
ensemble's card lists each member's SHA-256 and training settings, and its log
(``<out>.log``) holds the members' training logs one after the other. One member is
copied as it is (weights, card and log): ``make train`` with one seed trains one network.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ..nn.network import ensemble_of, parameter_count
from ..nn.weights import card_path, load_detector, save_weights


def join_members(members: list[Path], out: Path) -> str:
    """Write the ensemble of the weights files ``members`` to ``out`` (and its card);
    returns its SHA-256."""
    models = [load_detector(path) for path in members]
    ensemble = ensemble_of(models)
    cards = [json.loads(card_path(path).read_text()) for path in members]
    described = [{"sha256": model.weights_sha256, "training": card.get("training", {})}
                 for model, card in zip(models, cards)]
    return save_weights(ensemble, out, {"parameters": parameter_count(ensemble),
                                        "members": described})


def log_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".log")


def collect(members: list[Path], out: Path) -> str:
    """``out`` (weights, card and log) from the trained ``members``: their ensemble, or the
    one member itself; returns its SHA-256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = [log_path(path) for path in members]
    if len(members) == 1:
        checksum = load_detector(members[0]).weights_sha256  # verified before it is copied
        for source, target in [(members[0], out), (card_path(members[0]), card_path(out))]:
            shutil.copyfile(source, target)
    else:
        checksum = join_members(members, out)
    with open(log_path(out), "w") as joined:
        for index, log in enumerate(logs, 1):
            if len(members) > 1:
                joined.write(f"# member {index} of {len(members)} "
                             f"({members[index - 1].parent.name})\n")
            joined.write(log.read_text() if log.is_file() else "# (no log)\n")
    return checksum


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", type=Path, nargs="+", help="trained weights files")
    parser.add_argument("--out", type=Path, required=True, help="the ensemble's weights file")
    args = parser.parse_args(argv)
    print(f"{args.out}: SHA-256 {collect(args.members, args.out)}")


if __name__ == "__main__":
    main()
