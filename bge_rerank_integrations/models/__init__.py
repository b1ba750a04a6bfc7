"""Our own torch forward passes for the checkpoints whose Hub code we never execute.

Each module loads the official weights by their state-dict key names; import the one you need
(``minicpm_layerwise``, ``gemma2_lightweight``) directly.
"""
