"""dnastream.models: clean-room HyenaDNA (modules, configs, checkpoint loading).

Imports only :mod:`dnastream.kernels` from dnastream.
"""

from dnastream.models.config import (
    DEFAULT_MODULATION_SHIFT,
    NATIVE_FORMAT,
    HyenaDNAConfig,
    HyenaLayerConfig,
)
from dnastream.models.filter import FilterLengthError, HyenaFilter
from dnastream.models.hyenadna import (
    Block,
    HyenaDNAModel,
    HyenaDNAOutput,
    Mlp,
    next_token_logprobs,
)
from dnastream.models.keymap import KeyMapError
from dnastream.models.load import ModelLoadError, convert, detect_format, load_model, save_native
from dnastream.models.operator import HyenaOperator, ShortConv
from dnastream.models.safe_unpickle import (
    CheckpointFormatError,
    Placeholder,
    UnsafeCheckpointError,
    load_torch_checkpoint,
)

__all__ = [
    "DEFAULT_MODULATION_SHIFT",
    "NATIVE_FORMAT",
    "Block",
    "CheckpointFormatError",
    "FilterLengthError",
    "HyenaDNAConfig",
    "HyenaDNAModel",
    "HyenaDNAOutput",
    "HyenaFilter",
    "HyenaLayerConfig",
    "HyenaOperator",
    "KeyMapError",
    "Mlp",
    "ModelLoadError",
    "Placeholder",
    "ShortConv",
    "UnsafeCheckpointError",
    "convert",
    "detect_format",
    "load_model",
    "load_torch_checkpoint",
    "next_token_logprobs",
    "save_native",
]
