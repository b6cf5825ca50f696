"""Saving and loading the bundled detector without executing code from the file.

A weights file is a plain ``state_dict`` saved by ``torch.save``; beside it, a JSON
card ``<name>.json`` holds the network configuration (with ``members``: an ensemble)
and the file's SHA-256. Loading
checks the checksum first, then reads with ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .network import Detector, build_network

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "detector.pt"


class WeightsError(RuntimeError):
    """The detector's weights are missing, corrupt or do not match the network."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def save_weights(model: Detector, path: Path, extra: dict | None = None) -> str:
    """Write the weights and their card; returns the SHA-256 of the weights file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    checksum = sha256_of(path)
    card = {"format": "anomaly-detector-weights/1", "sha256": checksum,
            "network": model.config, **(extra or {})}
    card_path(path).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return checksum


# Weights below this change no score, but a long training schedule leaves units that no
# longer fire with weights decayed to 1e-30 and less: their products are denormal floats,
# which CPUs multiply several times slower (tools/bench.py records the shipped weights'
# speed with and without zeroing them).
NEGLIGIBLE_WEIGHT = 1e-10


def zero_negligible_weights(model: torch.nn.Module) -> None:
    """Set every parameter smaller than :data:`NEGLIGIBLE_WEIGHT` in magnitude to exactly zero."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter[parameter.abs() < NEGLIGIBLE_WEIGHT] = 0


def load_detector(path: Path | str | None = None, device: str = "cpu") -> Detector:
    """The network with verified weights (negligible ones zeroed, see
    :func:`zero_negligible_weights`), in eval mode, on ``device``."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    card_file = card_path(path)
    if not path.is_file() or not card_file.is_file():
        raise WeightsError(
            f"The detector's weights were not found ({path} and its card {card_file.name}). "
            "Reinstall the plugin, or retrain them with 'make train'.")
    try:
        card = json.loads(card_file.read_text())
        if not isinstance(card, dict) or not isinstance(card.get("network"), dict):
            raise ValueError("not a JSON object with 'sha256' and 'network'")
        expected, config = str(card["sha256"]), card["network"]
    except (ValueError, KeyError) as error:
        raise WeightsError(f"The weights card {card_file} is unreadable ({error}). "
                           "Reinstall the plugin.") from error
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsError(
            f"The weights file {path} is corrupt or was modified (SHA-256 {actual[:12]}... "
            f"does not match the expected {expected[:12]}...). Reinstall the plugin.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_network(config)
        model.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 - any failure here means unusable weights
        raise WeightsError(f"The weights file {path} cannot be loaded ({error}). "
                           "Reinstall the plugin.") from error
    zero_negligible_weights(model)
    model.weights_sha256 = actual  # recorded in the outputs' provenance
    return model.eval().to(device)
