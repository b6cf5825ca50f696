"""Default parameter values, read by the core, the Processing algorithms, the batch
entry and the help texts (one place to change them)."""

TILE_SIZE = 512
"""Largest tile of anomaly:detect (in analysed pixels) and of the local classic detectors;
smaller ones are used when memory is short."""

OVERLAP = 64
"""Context read around each tile of anomaly:detect, in analysed pixels."""

RX_TILE_SIZE = 1024
"""Largest tile of global RX (a per-pixel score: no margin, larger tiles cost nothing)."""

STATISTICS_BLOCK = 1024
"""Largest side of the square blocks the band statistics are read in."""

THRESHOLD_METHOD = "top_fraction"
"""How anomalous pixels are selected (see :mod:`.vector.threshold`)."""

THRESHOLD = 0.005
"""Fraction of valid pixels flagged by the top-fraction method (0.005 = 0.5 %)."""

MIN_AREA = 1
"""Smallest polygon kept, in pixels."""

TOP_N = 500
"""Polygons written: the most anomalous groups, a list an analyst can read (0 = all)."""

MEMORY_MB = 768
"""Working memory of one scoring run, in MiB (see :mod:`.raster.memory`)."""

PRECISIONS = ("auto", "float32", "bfloat16")
"""Arithmetic of the detector's convolutions on the CPU (``precision``; 'auto', the default,
is bfloat16 where the CPU computes it natively, else float32: :mod:`.nn.fused`)."""
