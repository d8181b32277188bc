"""Thresholds the library and the search both read, in a module without PyTorch so that reading a
run's results (``psvae status``) does not import it."""

ACTIVE_VAR = 0.01
"""A latent dimension is *active* when the variance over frames of its posterior mean is at least
this (the convention of Burda et al. 2016, against the N(0, 1) prior): below it, the encoder
gives (nearly) every frame the same code and the decoder cannot read anything from it."""

MIN_FRAME_SIZE = 32
"""The smallest frame side the network takes: its four stride-2 layers leave at least 2x2 pixels
for the last one."""
