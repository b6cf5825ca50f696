"""Join trained networks into one ensemble weights file (the mean of their logits).

    python -m anomaly_detector.model.training.ensemble A.pt B.pt [...] --out detector.pt

Each member is read and verified like any weights file (its card beside it); the
ensemble's card lists each member's SHA-256 and training settings.
"""
from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", type=Path, nargs="+", help="weights files (2 or more)")
    parser.add_argument("--out", type=Path, required=True, help="the ensemble's weights file")
    args = parser.parse_args(argv)
    if len(args.members) < 2:
        parser.error("an ensemble needs at least 2 members")
    print(f"{args.out}: SHA-256 {join_members(args.members, args.out)}")


if __name__ == "__main__":
    main()
