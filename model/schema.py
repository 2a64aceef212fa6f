"""The output tables' fields, in order, as (name, kind) with kind one of "int", "real", "text".

One definition for every writer: OGR in the worker's command line (model/vector.py) and
QGIS sinks in the algorithms (processing_provider/common.py).
"""

CHUNK_ID_FIELDS = (
    ("image_id", "text"),
    ("chunk_id", "int"),
)

# Where the chunk lies and how much image data it holds: after what the geologist reads.
CHUNK_WINDOW_FIELDS = (
    ("row", "int"),
    ("col", "int"),
    ("x_off", "int"),
    ("y_off", "int"),
    ("width", "int"),
    ("height", "int"),
    ("valid_fraction", "real"),
    ("centre_valid_fraction", "real"),
)

CHUNK_GRID_FIELDS = CHUNK_ID_FIELDS + CHUNK_WINDOW_FIELDS

# What the geologist reads and fills comes first in the attribute table.
DETECTION_FIELDS = CHUNK_ID_FIELDS + (
    ("probability", "real"),
    ("class", "text"),
    ("label", "int"),  # NULL, for the geologist: 1 icy, 0 not icy, -1 unclear
    ("review_rank", "int"),  # 1 = label this chunk first (model/review.py)
) + CHUNK_WINDOW_FIELDS

# From the HiRISE PDS3 label beside the image (model/pdslabel.py); NULL without one.
LABEL_SUMMARY_FIELDS = (
    ("observation_id", "text"),
    ("solar_longitude", "real"),  # Ls, degrees
    ("incidence_angle", "real"),  # degrees
    ("centre_latitude", "real"),  # degrees, planetocentric
    ("scaling_factor", "real"),  # I/F = DN * scaling_factor + scaling_offset
    ("scaling_offset", "real"),
    ("nodata_dn", "int"),
    ("low_saturation_dn", "int"),  # DNs at or below are saturated
    ("high_saturation_dn", "int"),  # DNs at or above are saturated
)

SUMMARY_FIELDS = (
    ("image_id", "text"),
    ("chunks", "int"),
    ("icy_chunks", "int"),
    ("hard_chunks", "int"),
    ("mean_probability", "real"),
    ("max_probability", "real"),
    ("category", "text"),
    ("model_name", "text"),
    ("model_version", "text"),
    ("runtime_s", "real"),
) + LABEL_SUMMARY_FIELDS

HISTORY_FIELDS = (("epoch", "int"),) + tuple((name, "real") for name in ("loss", "accuracy", "val_loss", "val_accuracy", "val_precision", "val_recall", "val_auc"))
