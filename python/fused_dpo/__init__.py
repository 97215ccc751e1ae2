"""fused-dpo from Python: a ctypes binding of its C ABI (libfused_dpo.so) and, in
fused_dpo.torch, the loss for PyTorch trainers. Pure Python: the library is found at
FUSED_DPO_LIB, else at build-c/libfused_dpo.so in the repository (`npm run build:c`)."""

from ._abi import FusedDpoError, FusedDpoInvalidArgument, FusedDpoUnavailable, NonFiniteLogitsWarning, library

__all__ = ["FusedDpoError", "FusedDpoInvalidArgument", "FusedDpoUnavailable", "NonFiniteLogitsWarning", "library"]
