"""The training path shared by every method: the method registry, the
recipes, the reference models and the datasets.
"""
