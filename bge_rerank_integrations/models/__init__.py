"""Our own torch forward passes for the checkpoints whose Hub code we never execute.

Each module loads the official weights by their state-dict key names; import the one you need
(``minicpm_layerwise``, ``gemma2_lightweight``) directly. ``blocks`` holds what they share: RMSNorm,
the rotary tables, the gated MLP, the score head and loading weights onto the meta device.
"""
