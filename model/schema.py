"""The output tables' fields, in order, as (name, kind) with kind one of "int", "real", "text".

One definition for every writer: OGR in the worker's command line (model/vector.py) and
QGIS sinks in the algorithms (processing_provider/common.py).
"""

CHUNK_GRID_FIELDS = (
    ("image_id", "text"),
    ("chunk_id", "int"),
    ("row", "int"),
    ("col", "int"),
    ("x_off", "int"),
    ("y_off", "int"),
    ("width", "int"),
    ("height", "int"),
    ("valid_fraction", "real"),
    ("centre_valid_fraction", "real"),
)

DETECTION_FIELDS = CHUNK_GRID_FIELDS + (
    ("probability", "real"),
    ("class", "text"),
    ("label", "int"),  # NULL, for the geologist: 1 icy, 0 not icy, -1 unclear
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
)

HISTORY_FIELDS = (("epoch", "int"),) + tuple((name, "real") for name in ("loss", "accuracy", "val_loss", "val_accuracy", "precision", "recall", "auc"))
