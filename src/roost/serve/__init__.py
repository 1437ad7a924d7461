"""Model serving on the device: backends, request decoding, micro-batching, the inference component."""
