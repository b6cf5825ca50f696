"""Classic detectors: global RX (``rx``), the in-memory reference baselines
(``baselines``) and the local ones streamed through the raster engine
(``local_baselines``)."""
