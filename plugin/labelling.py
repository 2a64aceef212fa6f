"""The labelling helper: write a label into the selected chunks of a layer.

Values follow the engine (model/labels.py): 1 icy, 0 not icy, -1 unclear (left out of
training). No GUI here, so it can be tested without one; plugin.py wires it to the toolbar.
"""

import os

from qgis.core import QgsFields, QgsProcessingUtils, QgsVectorDataProvider, QgsVectorLayer

try:
    from ..processing_provider.sources import source_path
    from ..processing_provider.styling import QVARIANT_TYPES
except ImportError:  # plugin imported as a top-level package
    from processing_provider.sources import source_path
    from processing_provider.styling import QVARIANT_TYPES

LABEL_FIELD = "label"
ICY, NOT_ICY, UNCLEAR = 1, 0, -1
NAMES = {ICY: "icy", NOT_ICY: "not icy", UNCLEAR: "unclear"}


def is_temporary(layer: QgsVectorLayer) -> bool:
    """Whether the layer is gone when QGIS closes: a memory layer, or a file in Processing's temporary folder
    (an algorithm's default output)."""
    if layer.providerType() == "memory":
        return True
    temporary = QgsProcessingUtils.tempFolder()  # "" where QGIS could make none: not the current folder
    return bool(temporary) and os.path.realpath(source_path(layer.source())).startswith(os.path.realpath(temporary) + os.sep)


def how_to_keep_labels(layer: QgsVectorLayer) -> str:
    """What keeps the labels: saving the layer's edits, or, for a temporary layer (Processing's default output, a
    memory layer), saving the layer itself first: its edits saved into the temporary file were gone with it."""
    if is_temporary(layer):
        return ("This layer is temporary, gone when QGIS closes: save it to a file first (right-click > Make Permanent, or Export > "
                "Save Features As... a GeoPackage), then save its edits to keep the labels.")
    return "Save the layer's edits to keep them."


class LabellingError(ValueError):
    """The layer cannot take labels; the message says why and what to do."""


def _value_for_field(field, value: int):
    """The label as the field stores it: a number for numeric fields, True / False / NULL for a
    Boolean one (NULL is left out of training, as unclear is), a word for text fields."""
    if field.type() == QVARIANT_TYPES["bool"]:
        return {ICY: True, NOT_ICY: False, UNCLEAR: None}[value]
    if not field.isNumeric():
        return NAMES[value]
    if field.type() == QVARIANT_TYPES["real"]:
        return float(value)
    return int(value)


def mark_selected(layer, value: int, field_name: str = LABEL_FIELD) -> int:
    """Write `value` (1, 0 or -1) into `field_name` of the selected features of `layer`.

    Starts editing if needed and groups the change in one undo command; the edits are left
    for the user to save. Returns the number of features changed (0 when nothing is selected).
    Raises LabellingError when the layer is not a vector layer, lacks the field, or cannot be edited.
    """
    if value not in NAMES:
        raise LabellingError(f"A label is 1 (icy), 0 (not icy) or -1 (unclear), not {value!r}.")
    if not isinstance(layer, QgsVectorLayer):
        raise LabellingError("Select a chunk layer (e.g. the output of Detect ice patches) in the Layers panel first.")
    index = layer.fields().lookupField(field_name)
    if index < 0:
        raise LabellingError(
            f"The layer '{layer.name()}' has no '{field_name}' field. Use the chunk layer of Detect ice patches, or add an integer field '{field_name}'."
        )
    if layer.fields().fieldOrigin(index) in (QgsFields.FieldOrigin.OriginExpression, QgsFields.FieldOrigin.OriginJoin):
        raise LabellingError(
            f"The '{field_name}' field of '{layer.name()}' is computed ({'a virtual field' if layer.fields().fieldOrigin(index) == QgsFields.FieldOrigin.OriginExpression else 'joined from another layer'}), "
            f"so no label can be written into it. Add an integer field '{field_name}' of the layer's own, or use the chunk layer of Detect ice patches."
        )
    ids = layer.selectedFeatureIds()
    if not ids:
        return 0
    provider = layer.dataProvider()
    if provider is None or not (provider.capabilities() & QgsVectorDataProvider.Capability.ChangeAttributeValues) or layer.readOnly():
        where = source_path(layer.source())
        advice = ("Save a copy where you can write (Export > Save Features As…, a GeoPackage) and label the copy"
                  if where.lower().endswith(".gpkg") else "Save it as a GeoPackage where you can write, and label that")
        raise LabellingError(f"The layer '{layer.name()}' cannot be edited (read-only: its file, its folder or its format). {advice}.")
    if not layer.isEditable() and not layer.startEditing():
        raise LabellingError(f"Could not start editing '{layer.name()}'.")
    stored = _value_for_field(layer.fields().at(index), value)
    layer.beginEditCommand(f"Mark {len(ids)} chunk(s) {NAMES[value]}")
    changed = 0
    try:
        for fid in ids:
            if layer.changeAttributeValue(fid, index, stored):
                changed += 1
    except Exception:
        layer.destroyEditCommand()
        raise
    if not changed:
        layer.destroyEditCommand()
        raise LabellingError(f"No label could be written into the '{field_name}' field of '{layer.name()}'. Check that the field is the layer's own and editable.")
    layer.endEditCommand()
    layer.triggerRepaint()
    return changed
