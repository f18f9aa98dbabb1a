"""Backend-neutral building blocks: validators, backend differences, kernel layouts,
sparsity structures, the layer walker, budgets and the mask constraint.

Modules here import only Keras, NumPy and each other.
"""
