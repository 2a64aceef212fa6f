"""The output tables' fields, in order, as (name, kind) with kind one of "int", "real", "text".

One definition for every writer: OGR in the worker's command line (model/vector.py) and in the
survey's GeoPackage (model/surveystore.py), and QGIS sinks in the algorithms (processing_provider/common.py).
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

# What the geologist reads and fills comes first in the attribute table; last, the model that scored the chunk, so that
# layers of two models (and a survey rescored with a retrained one) tell apart, and retraining continues the right one.
DETECTION_FIELDS = CHUNK_ID_FIELDS + (
    ("probability", "real"),
    ("class", "text"),
    ("label", "int"),  # NULL, for the geologist: 1 icy, 0 not icy, -1 unclear
    ("review_rank", "int"),  # 1 = label this chunk first (model/review.py)
) + CHUNK_WINDOW_FIELDS + (
    ("model_name", "text"),
    ("model_version", "text"),
)

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
    # how the image was scored, beside the model: two runs of one model compare only at the same grid and mirror
    ("chunk_size", "int"),
    ("stride", "int"),
    ("tta", "int"),  # 1: east-west mirror averaged
    # and the rest of what a published count rests on: the class and category depend on the thresholds and rule, the count on
    # the chunks left out; the weights' digest tells two model files of one name apart
    ("icy_threshold", "real"),
    ("hard_low", "real"),
    ("category_rule", "text"),
    ("min_valid", "real"),
    ("dropped_chunks", "int"),  # grid chunks left out for no-data
    ("weights_sha256", "text"),
    ("engine_version", "text"),
    ("scored_at", "text"),  # UTC, ISO 8601
) + LABEL_SUMMARY_FIELDS

HISTORY_FIELDS = (("epoch", "int"),) + tuple((name, "real") for name in ("loss", "accuracy", "val_loss", "val_accuracy", "val_precision", "val_recall", "val_auc"))

# The survey's image outlines (model/surveystore.py), one row per image.
FOOTPRINT_FIELDS = (
    ("image_id", "text"),
    ("category", "text"),  # rules.GOOD / HARD / BAD, by the survey's CATEGORY_RULE
    ("chunks", "int"),
    ("icy_chunks", "int"),
    ("mean_probability", "real"),
    ("model_name", "text"),
    ("model_version", "text"),
)

# The survey's table of runs (model/surveystore.py), one row per image tried.
RUN_FIELDS = (
    ("image", "text"),  # the raster's path as the workers read it
    ("image_id", "text"),
    ("status", "text"),  # DONE or FAILED
    ("error", "text"),
    ("model_name", "text"),
    ("model_version", "text"),
    ("runtime_s", "real"),
    ("chunks", "int"),
    ("finished", "text"),  # UTC, ISO 8601
    ("fingerprint", "text"),  # the file's size and a digest of its first and last 64 KiB (survey.fingerprint): the same raster elsewhere
)

# A product found in the index (model/products.py Product; the find algorithm's layer).
CATALOG_FIELDS = (
    ("product_id", "text"),
    ("observation_id", "text"),
    ("product_type", "text"),
    ("centre_latitude", "real"),
    ("centre_longitude", "real"),
    ("minimum_latitude", "real"),
    ("maximum_latitude", "real"),
    ("westernmost_longitude", "real"),
    ("easternmost_longitude", "real"),
    ("solar_longitude", "real"),
    ("incidence_angle", "real"),
    ("emission_angle", "real"),
    ("phase_angle", "real"),
    ("local_time", "real"),
    ("map_scale", "real"),
    ("north_turn", "real"),  # degrees clockwise from up that north points at the centre of the product's map
    ("start_time", "text"),
    ("year", "int"),
    ("mars_year", "int"),
    ("orbit_number", "int"),
    ("mission_phase", "text"),
    ("themes", "text"),
    ("jp2_url", "text"),
    ("lbl_url", "text"),
    # Byte counts are "real": QGIS's "int" fields are 32-bit, and a double holds integers exactly up to 2**53.
    ("jp2_bytes", "real"),  # NULL where the source does not give it (the CSV and the PDS index do not)
    ("lbl_bytes", "real"),
    ("size_unit_bytes", "int"),  # precision of jp2_bytes/lbl_bytes: 1, or 1024 from ODE's KBytes
    ("index_storage_bytes", "real"),  # the CSV's REQUIRED_STORAGE_BYTES (the uncompressed product, not the JP2)
    ("source", "text"),
)
