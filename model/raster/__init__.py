"""Raster engine shared by every detector: opening and reading (``io``), input and
output file guards (``files``), band statistics (``stats``), the tile grid
(``tiling``), the scorer contract (``scorer``), tiled scoring (``pipeline``),
atomic outputs (``output``), the memory setting (``memory``), progress callbacks
(``progress``), errors (``errors``) and the area of interest (``area``)."""
