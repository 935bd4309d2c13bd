"""One module per organ system, each adding its solids to a :class:`~..builder.Builder`.

Each module's ``build(b)`` is called once by :func:`~l3node.phantom.scene.build_scene`, in a
fixed order; the modules import the builder and never the scene, nor each other.
"""
