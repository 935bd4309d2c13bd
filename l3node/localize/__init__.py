"""The L3 localizer: preprocessing, ResNet50, the L3 decision, the anatomical check.

Kept import-light: ``.decision`` needs no torch; ``.model`` and
``.localizer`` import it.
"""
