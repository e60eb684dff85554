"""Steerable multi-objective language models: Conditional Language Policies (CLP).

One base model with K low-rank adapters per conditioned layer, one per objective, mixed as
``W0 + sum_k w_k (alpha / r) B_k A_k`` for a weighting ``w`` chosen at inference time.
"""
