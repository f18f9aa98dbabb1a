"""Robustness (TensorFlow only): attacks, adversarial training, robust
evaluation, Module Robustness Sensitivity and MRPF.
"""
