"""Penalties of the pruning methods, as `keras.regularizers.Regularizer`s.

Modules here import `tf_reweight.core` only.
"""
