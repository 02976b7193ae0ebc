"""dnastream.kernels: long (FFT) and short causal convolutions.

Public functions validate their inputs and dispatch to a backend; the ``*_ref`` twins are the
plain PyTorch references they are tested against. This package imports nothing else from
dnastream.
"""

from dnastream.kernels.fftconv import fftconv
from dnastream.kernels.fftconv_ref import fftconv_backward_ref, fftconv_ref
from dnastream.kernels.short_conv import MAX_SHORT_CONV_WIDTH, short_conv, short_conv_streaming
from dnastream.kernels.short_conv_ref import short_conv_ref, short_conv_state_ref
from dnastream.kernels.spectrum import FFTConv, compute_dtype, fft_size, next_fast_len

__all__ = [
    "MAX_SHORT_CONV_WIDTH",
    "FFTConv",
    "compute_dtype",
    "fft_size",
    "fftconv",
    "fftconv_backward_ref",
    "fftconv_ref",
    "next_fast_len",
    "short_conv",
    "short_conv_ref",
    "short_conv_state_ref",
    "short_conv_streaming",
]
