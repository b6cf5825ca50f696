"""Train the bundled detector on simulated anomalies.

    python -m anomaly_detector.model.training.train --data DIR [DIR ...] --steps N --out weights/detector.pt
                                                    [--resume CHECKPOINT] [--validate DEV_DIR]

The saved and validated weights are an exponential moving average of the trained
ones (``--ema``), steadier from checkpoint to checkpoint than the last step's.
Seeded and resumable: a checkpoint (network, its average, losses, optimisers, random
state) is written every ``--checkpoint-every`` steps next to ``--out``; ``--resume``
continues from it bit for bit. Loss and a periodic validation AUC go to the log file;
a terminal also gets a progress bar with loss and ETA. Uses a GPU when present.
``--workers N`` simulates the batches in N processes beside the training step: faster
with spare cores, a different data stream (each worker draws from its own seed; after a
resume, from seeds that also depend on the step resumed at).
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..nn.evidence import LOCAL_RX_COMPONENTS
from .losses import FEATURE_LOSS_WEIGHT, PEAK_LOSS_WEIGHT, FeatureMarginLoss, PeakMarginLoss, \
    PixelMarginLoss, top_thresholds
from ..nn.network import VIEWS, DeviationNet, parameter_count
from .simulation import AnomalySimulator, load_backgrounds, make_batch
from .simulation_config import SimulationConfig
from ..nn.weights import save_weights

REPO = Path(__file__).resolve().parents[2]
# Options the card records only when they differ from these values, so that `make train`
# still writes the card of the bundled weights.
RECORDED_WHEN_SET = {"train_views": 1, "object_balance": 0.0, "quantum_floor": 0.0,
                     "faint_negatives": 0.0, "faint_max_bands": 0,
                     "one_band_copies": False, "rounded_crops": False, "grey_floors": False}
SHARED_DATA = REPO.parent / "shared" / "data"


def simulation_config(args: argparse.Namespace) -> SimulationConfig:
    """The simulation's defaults with the command line's changes."""
    defaults = SimulationConfig()
    return replace(defaults, panels_p=args.panel_arrays, hard_negatives_p=args.hard_negatives,
                   repeated_objects_p=args.repeated_objects, bright_targets_p=args.bright_targets,
                   jpeg_p=args.jpeg, rescaled_backgrounds_p=args.rescaled_backgrounds,
                   quantum_floor=args.quantum_floor, rounded_crops=args.rounded_crops,
                   panels=replace(defaults.panels, field_p=args.panel_fields),
                   hard_negatives=replace(defaults.hard_negatives,
                                          corner_p=args.corner_negatives,
                                          blob_p=args.blob_negatives,
                                          smooth_p=args.smooth_negatives,
                                          faint_p=args.faint_negatives,
                                          faint_max_bands=args.faint_max_bands))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the cross-modality deviation detector.")
    parser.add_argument("--data", type=Path, nargs="+",
                        default=[SHARED_DATA / "train", SHARED_DATA / "train_extra"],
                        help="background image folders (<dir>/<modality>/*.tif) or bank files "
                             "(.npz, written by tools/background_bank.py)")
    parser.add_argument("--steps", type=int, default=6000, help="steps to run")
    parser.add_argument("--schedule-steps", type=int, default=6000,
                        help="length of the learning-rate schedule (at least --steps)")
    parser.add_argument("--out", type=Path, default=REPO / "weights" / "detector.pt")
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from")
    parser.add_argument("--validate", type=Path, default=None,
                        help="labelled scenes (<dir>/<modality>/<scene>/) for a periodic AUC")
    parser.add_argument("--validate-every", type=int, default=1000)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--width", type=int, default=10)
    parser.add_argument("--evidence", action=argparse.BooleanOptionalAction, default=True,
                        help="add the classic evidence channels (local contrast, local RX) "
                             "to the network's input")
    parser.add_argument("--local-rx-components", type=int, default=LOCAL_RX_COMPONENTS,
                        help="leading components compared by the local RX evidence channel")
    parser.add_argument("--views", type=int, choices=VIEWS, default=2,
                        help="views whose logits the saved network averages when it scores "
                             "(1: the tile as it is; 2: also turned by 180 degrees; 4: also "
                             "mirrored); training sees the tile as it is (see --train-views)")
    parser.add_argument("--train-views", type=int, choices=VIEWS, default=1,
                        help="views whose mean logit the pixel loss judges in training (1: "
                             "the tile as it is; 2 or 4: as the saved network scores with "
                             "that many views)")
    parser.add_argument("--peak-weight", type=float, default=PEAK_LOSS_WEIGHT,
                        help="weight of the object-level peak margin loss (0 = off)")
    parser.add_argument("--top-threshold", type=float, default=None,
                        help="an extra, highest score threshold of the pixel loss with a "
                             "false-positive-rate anchor of 0 (orders the top of the map)")
    parser.add_argument("--object-balance", type=float, default=0.0,
                        help="weight each simulated target's pixels in the pixel loss by the "
                             "target's size to this power, negated (1: every target counts "
                             "the same; 0: every pixel does)")
    parser.add_argument("--corner-negatives", type=float,
                        default=SimulationConfig().hard_negatives.corner_p,
                        help="probability that a simulated hard negative is a corner "
                             "(two edges meeting) rather than an edge, line or cloud")
    parser.add_argument("--blob-negatives", type=float,
                        default=SimulationConfig().hard_negatives.blob_p,
                        help="probability that a simulated hard negative is a compact smooth "
                             "blob of 4-12 px sigma (cloud fragment, roof), taught as normal")
    parser.add_argument("--rescaled-backgrounds", type=float,
                        default=SimulationConfig().rescaled_backgrounds_p,
                        help="probability that a background crop is drawn at another ground "
                             "sample distance (a window of half to twice the crop's side, "
                             "resampled to it)")
    parser.add_argument("--faint-negatives", type=float,
                        default=SimulationConfig().hard_negatives.faint_p,
                        help="probability that a simulated hard negative is 2-6 faint bumps "
                             "(0.3-1 local standard deviations, 4-150 px), taught as "
                             "background")
    parser.add_argument("--faint-max-bands", type=int,
                        default=SimulationConfig().hard_negatives.faint_max_bands,
                        help="faint bumps (--faint-negatives) only in crops of sensors with at "
                             "most this many bands (0: every sensor)")
    parser.add_argument("--one-band-copies", action="store_true",
                        help="train on a background that is a grey image stored in several "
                             "integer bands as its one band (as the detector reduces it), not "
                             "as bands whose rounding differences are components")
    parser.add_argument("--rounded-crops", action="store_true",
                        help="round each training crop of an integer background to the "
                             "sensor's grey levels last, as it stores them (smooth gradients "
                             "become flat steps of one grey level, taught as background)")
    parser.add_argument("--grey-floors", action="store_true",
                        help="reduce each training crop of an integer background with one "
                             "grey level, and floor its evidence there, as anomaly:detect "
                             "reduces and floors an integer raster")
    parser.add_argument("--quantum-floor", type=float,
                        default=SimulationConfig().quantum_floor,
                        help="simulated targets stand at least this many quantisation steps "
                             "of an integer background per local standard deviation of "
                             "strength (0: no floor; flat 8-bit areas then get targets of 1-2 "
                             "grey levels)")
    parser.add_argument("--smooth-negatives", type=float,
                        default=SimulationConfig().hard_negatives.smooth_p,
                        help="probability that a simulated hard negative is a patch smoother "
                             "than its surroundings at the same level (a blurred copy of part "
                             "of the crop), taught as background")
    parser.add_argument("--panel-arrays", type=float, default=SimulationConfig().panels_p,
                        help="probability that a visible or multispectral crop gets a "
                             "solar-panel-like array of dark rectangles as anomalies")
    parser.add_argument("--bright-targets", type=float,
                        default=SimulationConfig().bright_targets_p,
                        help="probability that a simulated target in an infrared, thermal or "
                             "SAR crop is brighter than its surroundings (0: 0.65 for pasted "
                             "objects, 0.85 for point targets, as in other crops)")
    parser.add_argument("--panel-fields", type=float, default=SimulationConfig().panels.field_p,
                        help="probability that a panel array is a field of many long rows "
                             "reaching beyond the crop")
    parser.add_argument("--jpeg", type=float, default=SimulationConfig().jpeg_p,
                        help="probability that a crop of 1-3 bands is JPEG-compressed last "
                             "(8 x 8 block artefacts as background)")
    parser.add_argument("--hard-negatives", type=float,
                        default=SimulationConfig().hard_negatives_p,
                        help="probability that a crop gets hard negatives (edges, corners, "
                             "lines, clouds) taught as background")
    parser.add_argument("--repeated-objects", type=float,
                        default=SimulationConfig().repeated_objects_p,
                        help="probability that a spatial crop gets one small object repeated "
                             "4-12 times, taught as normal")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema", type=float, default=0.998,
                        help="decay of the exponential moving average of the weights that is "
                             "validated and saved (0 = save the raw weights)")
    parser.add_argument("--seed", type=int, default=20241)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes that simulate batches beside the training step (0 = "
                             "simulate in the training process, the stream of the shipped runs)")
    parser.add_argument("--log", type=Path, default=None, help="log file (default: <out>.log)")
    return parser.parse_args(argv)


class _SimulatedBatches(torch.utils.data.IterableDataset):
    """Endless batches from one simulator; each loader worker draws from its own seed."""

    def __init__(self, simulator: AnomalySimulator, seed: tuple[int, ...], batch: int,
                 grey_floors: bool) -> None:
        self.simulator, self.seed, self.batch = simulator, seed, batch
        self.grey_floors = grey_floors

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([*self.seed, torch.utils.data.get_worker_info().id])
        while True:
            yield make_batch(self.simulator, rng, self.batch, self.grey_floors)


def simulated_batches(simulator: AnomalySimulator, rng: np.random.Generator,
                      args: argparse.Namespace, start_step: int
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Training batches (features, labels, grey steps): drawn from ``rng`` in this process,
    or by ``args.workers`` processes (taking turns) seeded from ``args.seed`` and
    ``start_step``."""
    if not args.workers:
        while True:
            yield tuple(map(torch.from_numpy, make_batch(simulator, rng, args.batch,
                                                         args.grey_floors)))
    dataset = _SimulatedBatches(simulator, (args.seed, start_step), args.batch,
                                args.grey_floors)
    yield from torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=args.workers,
                                           prefetch_factor=4, persistent_workers=True)


def update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float,
                   step: int) -> None:
    """Move ``average``'s weights towards ``model``'s (decay warmed up over the first steps)."""
    decay = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for kept, current in zip(average.parameters(), model.parameters()):
            kept.lerp_(current, 1 - decay)


def learning_rate(step: int, steps: int, peak: float, warmup: int = 200, floor: float = 1e-4) -> float:
    """Linear warm-up, then cosine decay to ``floor``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


class ProgressBar:
    """A one-line bar with loss and ETA, only when stderr is a terminal."""

    def __init__(self, total: int, start_step: int) -> None:
        self.total, self.start_step, self.started = total, start_step, time.time()
        self.enabled = sys.stderr.isatty()

    def update(self, step: int, loss: float) -> None:
        if not self.enabled:
            return
        done = step - self.start_step
        rate = done / max(time.time() - self.started, 1e-9)
        eta = (self.total - step) / max(rate, 1e-9)
        filled = int(30 * step / self.total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {step}/{self.total} "
                         f"loss {loss:.4f} ETA {int(eta // 60):d}m{int(eta % 60):02d}s ")
        sys.stderr.flush()
        if step == self.total:
            sys.stderr.write("\n")


@dataclass
class Trainer:
    """The network, its moving average, the losses and their optimisers: one training step
    at a time, saved to and restored from a checkpoint."""

    model: DeviationNet
    average: DeviationNet
    pixel_loss: PixelMarginLoss
    feature_loss: FeatureMarginLoss
    peak_loss: PeakMarginLoss
    optimiser: torch.optim.Optimizer
    multiplier_optimiser: torch.optim.Optimizer

    CHECKPOINTED = ("model", "average", "pixel_loss", "feature_loss", "optimiser",
                    "multiplier_optimiser")

    @classmethod
    def create(cls, args: argparse.Namespace, device: str) -> "Trainer":
        model = DeviationNet(width=args.width, evidence=args.evidence,
                             local_rx_components=args.local_rx_components,
                             views=args.views).to(device)
        pixel_loss = PixelMarginLoss(*top_thresholds(args.top_threshold),
                                     object_balance=args.object_balance).to(device)
        feature_loss = FeatureMarginLoss().to(device)
        optimiser = torch.optim.Adam(list(model.parameters()) + list(feature_loss.parameters()),
                                     lr=args.lr, weight_decay=1e-5)
        multiplier_optimiser = torch.optim.Adam(pixel_loss.parameters(), lr=1e-3, maximize=True)
        return cls(model, copy.deepcopy(model), pixel_loss, feature_loss, PeakMarginLoss(),
                   optimiser, multiplier_optimiser)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, grey_steps: torch.Tensor,
             lr: float, step: int, args: argparse.Namespace) -> dict[str, torch.Tensor]:
        """One optimisation step at learning rate ``lr``, each sample's evidence floored at
        its grey step (0, the fixed floors, unless ``--grey-floors``); returns the loss and
        its parts."""
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        self.model.train()
        logits, last_features = self.model(inputs, args.train_views,
                                           grey_steps)
        losses = {"pixel": self.pixel_loss(logits, targets),
                  "feature": self.feature_loss(last_features, targets),
                  "peak": self.peak_loss(logits, targets) if args.peak_weight
                  else logits.new_zeros(())}
        loss = losses["pixel"] + FEATURE_LOSS_WEIGHT * losses["feature"] + \
            args.peak_weight * losses["peak"]
        self.optimiser.zero_grad(set_to_none=True)
        self.multiplier_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 100.0)
        self.optimiser.step()
        self.multiplier_optimiser.step()
        update_average(self.average, self.model, args.ema, step)
        return {"loss": loss, **losses}

    def save(self, path: Path, rng: np.random.Generator, step: int) -> None:
        torch.save({**{name: getattr(self, name).state_dict() for name in self.CHECKPOINTED},
                    "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "step": step}, path)

    def resume(self, path: Path, rng: np.random.Generator, device: str) -> int:
        """Restore the checkpoint at ``path`` (random states included); returns its step."""
        state = torch.load(path, map_location=device, weights_only=True)
        for name in self.CHECKPOINTED:
            getattr(self, name).load_state_dict(state[name])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"].cpu())  # map_location moved it with the rest
        return int(state["step"])


def _log_step(log, step: int, losses: dict[str, torch.Tensor], running: float,
              trainer: Trainer, started: float) -> None:
    multipliers = " ".join(f"{m:.3f}" for m in trainer.pixel_loss.multipliers.tolist())
    log.write(f"step {step} loss {losses['loss'].item():.4f} avg {running:.4f} "
              f"pixel {losses['pixel'].item():.4f} feature {losses['feature'].item():.4f} "
              f"peak {losses['peak'].item():.4f} lr {trainer.optimiser.param_groups[0]['lr']:.5f} "
              f"multipliers {multipliers} elapsed {time.time() - started:.0f}s\n")


def _validate(log, step: int, average: DeviationNet, scenes: list) -> None:
    from .evaluate import validate_in_memory
    threads = torch.get_num_threads()
    means = validate_in_memory(copy.deepcopy(average).cpu().eval(), scenes)
    torch.set_num_threads(threads)  # inference may have changed it
    log.write(f"validate step {step} " + " ".join(f"{k} {v:.4f}" for k, v in means.items()) + "\n")


def train(args: argparse.Namespace) -> Path:
    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)  # denormal gradients late in training slow CPUs down a lot
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":  # float32 as on CPUs, not TF32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(args.seed)
    checkpoint_path = args.out.with_suffix(".checkpoint.pt")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    trainer = Trainer.create(args, device)
    step = trainer.resume(args.resume, rng, device) if args.resume else 0
    backgrounds = load_backgrounds(args.data, args.one_band_copies)
    simulator = AnomalySimulator(backgrounds, crop=args.crop, config=simulation_config(args))
    scenes = None
    if args.validate:
        from .evaluate import find_scenes
        scenes = find_scenes(args.validate)
    with open(args.log or args.out.with_suffix(".log"), "a", buffering=1) as log:
        log.write(f"# start step {step} of {args.steps}; parameters "
                  f"{parameter_count(trainer.model)}; device {device}; threads "
                  f"{torch.get_num_threads()}; args {vars(args)}\n")
        bar = ProgressBar(args.steps, step)
        started, running = time.time(), None
        batches = simulated_batches(simulator, rng, args, step)
        while step < args.steps:
            features, labels, grey_steps = next(batches)
            lr = learning_rate(step, max(args.schedule_steps, args.steps), args.lr)
            losses = trainer.step(features.to(device), labels.to(device), grey_steps.to(device),
                                  lr, step, args)
            step += 1
            loss = losses["loss"].item()
            running = loss if running is None else 0.98 * running + 0.02 * loss
            bar.update(step, running)
            if step % 25 == 0 or step == args.steps:
                _log_step(log, step, losses, running, trainer, started)
            if step % args.checkpoint_every == 0 or step == args.steps:
                trainer.save(checkpoint_path, rng, step)
            if scenes and (step % args.validate_every == 0 or step == args.steps):
                _validate(log, step, trainer.average, scenes)
        checksum = save_weights(trainer.average.cpu(), args.out, extra={
            "training": {"steps": args.steps, "schedule_steps": args.schedule_steps,
                         "seed": args.seed, "batch": args.batch, "crop": args.crop,
                         "ema": args.ema, "peak_weight": args.peak_weight,
                         "top_threshold": args.top_threshold,
                         "corner_negatives": args.corner_negatives,
                         "blob_negatives": args.blob_negatives,
                         "smooth_negatives": args.smooth_negatives,
                         "rescaled_backgrounds": args.rescaled_backgrounds,
                         "panel_arrays": args.panel_arrays,
                         "bright_targets": args.bright_targets,
                         "panel_fields": args.panel_fields, "jpeg": args.jpeg,
                         "workers": args.workers,
                         **{name: getattr(args, name) for name, default in
                            RECORDED_WHEN_SET.items() if getattr(args, name) != default},
                         "data": [str(p) for p in args.data]},
            "parameters": parameter_count(trainer.model)})
        log.write(f"# done: {args.out} sha256 {checksum} wall {time.time() - started:.0f}s\n")
    return args.out


def main(argv: list[str] | None = None) -> int:
    try:
        train(parse_args(argv))
    finally:
        torch.set_flush_denormal(False)  # process-wide: do not leave it on for the caller
    return 0


if __name__ == "__main__":
    sys.exit(main())
