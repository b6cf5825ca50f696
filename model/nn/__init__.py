"""The learned detector: spectral reduction (``features``), classic evidence channels
(``evidence``), the network (``network``) and its fused CPU path (``fused``), verified
weights (``weights``) and the tiled scorer over rasters (``detector``). Needs torch."""
