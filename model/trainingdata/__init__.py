"""Training data: real terrain crops with ice patches and look-alikes planted on them.

Apart from the inference engine: detection never imports this package. ``imaging`` holds the
conventions and helpers, ``relief`` the drawn shadow casters, ``shade`` where terrain is in shade,
``patches`` the patch shapes and how ice brightens the ground; ``ice`` has one module per family of
ice patches, ``lookalikes`` one per kind of negative; ``degrade`` the whole-chunk degradations;
``examples`` turns a crop into a training example; ``terrain`` and ``scene`` make the demo scene.
"""
