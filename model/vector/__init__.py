"""From a score raster to ranked anomaly polygons: the threshold (``threshold``),
8-connected groups in one streaming pass (``groups``), polygons (``polygons``), their
attributes (``attributes``) and vector outputs (``output``)."""
