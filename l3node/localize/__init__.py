"""The L3 localizer: series loading, preprocessing, ResNet50, the L3 decision.

Kept import-light: ``l3node.localize.series`` and ``.decision`` need no torch; ``.model`` and
``.localizer`` import it.
"""
