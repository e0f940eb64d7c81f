"""Per-layer profiles: which operators cost what in one inference.

A board's `profile` reply (TFLM's MicroProfiler on the firmware, the cost model on the virtual board) or the
virtual board's estimate of a model file, as one table whose rows add up to the whole inference; and the
per-layer change between two profiles, for the gate's report when a variant regresses.
"""

from hil.profiling.layers import LayerChange, LayerProfile, LayerTime, estimate, from_board, layer_changes

__all__ = ["LayerChange", "LayerProfile", "LayerTime", "estimate", "from_board", "layer_changes"]
