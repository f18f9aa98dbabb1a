"""k-bit quantization: quantizers, quantization-aware training and
quantized pruning.
"""
