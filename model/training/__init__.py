"""Training and evaluation of the detector (development only, not in the plugin ZIP):
anomaly simulation (``simulation``), losses (``losses``), the training run (``train``),
pixel and object quality (``evaluate``, ``objects``)."""
