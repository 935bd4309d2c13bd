"""The offline trainer: ``python -m training ...`` (data, Bayesian search, reports, artifact).

It imports l3node's own preprocessing, model and decision code; it keeps no copy of them.
"""
