"""ctypes binding of the C ABI (csrc/core/fused_dpo.h, ABI 2).

The structs below are this binding's copy of the header, as a C caller would compile it: fields
in order, each struct's struct_size set to its ctypes size. The loss kinds and hyperparameters are
not copied: they are read from the loaded library (fdpo_loss_kind_info, fdpo_loss_param_info), so
the table in lib/loss-kinds.ts stays the one source.
"""

import ctypes
import os
import re
from pathlib import Path

ABI_VERSION = 2
MAX_LOSSES = 8
MAX_PARAMS = 16

# fdpo_dtype
FLOAT32, BFLOAT16, FLOAT16 = 0, 1, 2

# fdpo_stat: indexes into fdpo_loss_outputs.stats
STAT_LOSS = 0
STAT_CHOSEN_LOGIT_SUM = 1
STAT_CHOSEN_TOKENS = 2
STAT_REJECTED_LOGIT_SUM = 3
STAT_REJECTED_TOKENS = 4
STAT_ENTROPY_SUM = 5
STAT_CHOSEN_CORRECT = 6
STAT_COUNT = 7

# fdpo_kind flags (FDPO_KIND_*)
KIND_NEEDS_REF = 1
KIND_REPORTS_AVERAGED = 4

STATUS_NAMES = {
    0: "FDPO_OK",
    1: "FDPO_ERR_INVALID_ARGUMENT",
    2: "FDPO_ERR_OUT_OF_MEMORY",
    3: "FDPO_ERR_INTERNAL",
    4: "FDPO_ERR_UNAVAILABLE",
    5: "FDPO_ERR_DEVICE",
}


class FusedDpoError(RuntimeError):
    """A call into libfused_dpo failed: `status` is the fdpo_status, the message the library's."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status
        self.status_name = STATUS_NAMES.get(status)


class FusedDpoInvalidArgument(FusedDpoError, ValueError):
    """FDPO_ERR_INVALID_ARGUMENT: the library refused an input (a ValueError too)."""


class FusedDpoUnavailable(FusedDpoError):
    """FDPO_ERR_UNAVAILABLE: the CUDA backend is not in this library, or no device answers."""


class NonFiniteLogitsWarning(RuntimeWarning):
    """A sequence's log-prob is not finite (an inf, a NaN or a logit beyond +-1.7e38 in one of its
    scored rows), so the loss is NaN, infinite or saturated: the warning names the sequence and
    the row. `warnings.simplefilter("error", NonFiniteLogitsWarning)` makes it raise."""


def _error_class(status):
    return {1: FusedDpoInvalidArgument, 4: FusedDpoUnavailable}.get(status, FusedDpoError)


class Tokens(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("logits", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("rows", ctypes.c_int64),
        ("vocab", ctypes.c_int64),
        ("labels", ctypes.c_void_p),
        ("cu_seqlens", ctypes.c_void_p),
        ("num_seqs", ctypes.c_int64),
        ("ignore_index", ctypes.c_int32),
        # model-head transforms (0 = off): z*logit_scale, softcap*tanh(z/softcap), z/temperature
        ("logit_scale", ctypes.c_double),
        ("softcap", ctypes.c_double),
        ("temperature", ctypes.c_double),
        # LD-DPO (0 = off): weight ld_alpha on the tokens past the shorter sequence of the pair
        ("ld_alpha", ctypes.c_double),
        ("ld_weighting", ctypes.c_int32),
    ]


class LossConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("num_losses", ctypes.c_int32),
        ("kinds", ctypes.c_int32 * MAX_LOSSES),
        ("weights", ctypes.c_double * MAX_LOSSES),
        ("num_params", ctypes.c_int32),
        ("params", ctypes.c_double * MAX_PARAMS),
        ("scale", ctypes.c_double),
        ("ref_chosen", ctypes.c_void_p),
        ("ref_rejected", ctypes.c_void_p),
        ("f_divergence", ctypes.c_int32),
        ("use_weighting", ctypes.c_int32),
        # per-token reference log-probs (rows doubles), instead of ref_chosen/ref_rejected
        ("ref_token_logps", ctypes.c_void_p),
    ]


# fdpo_f_divergence: TRL's f_divergence_type values (and forward_kl), by their ABI codes.
F_DIVERGENCES = {"reverse_kl": 0, "forward_kl": 1, "js_divergence": 2, "alpha_divergence": 3}


class LossOutputs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("seq_logps", ctypes.c_void_p),
        ("seq_counts", ctypes.c_void_p),
        ("seq_grad", ctypes.c_void_p),
        ("pair_losses", ctypes.c_void_p),
        ("chosen_rewards", ctypes.c_void_p),
        ("rejected_rewards", ctypes.c_void_p),
        ("stats", ctypes.c_void_p),
        ("grad", ctypes.c_void_p),
        ("row_scale", ctypes.c_void_p),
    ]


# fdpo_kto_loss_type: TRL's KTOConfig.loss_type values, by their ABI codes.
KTO_LOSS_TYPES = {"kto": 0, "apo_zero_unpaired": 1}


class KtoConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("loss_type", ctypes.c_int32),
        ("beta", ctypes.c_double),
        ("desirable_weight", ctypes.c_double),
        ("undesirable_weight", ctypes.c_double),
        ("scale", ctypes.c_double),
        ("desirable", ctypes.c_void_p),
        ("ref_logps", ctypes.c_void_p),
        ("kl_logps", ctypes.c_void_p),
        ("kl_ref_logps", ctypes.c_void_p),
        ("kl_count", ctypes.c_int64),
    ]


class KtoOutputs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("seq_logps", ctypes.c_void_p),
        ("seq_counts", ctypes.c_void_p),
        ("seq_grad", ctypes.c_void_p),
        ("seq_losses", ctypes.c_void_p),
        ("rewards", ctypes.c_void_p),
        ("stats", ctypes.c_void_p),
        ("kl", ctypes.c_void_p),
        ("grad", ctypes.c_void_p),
        ("row_scale", ctypes.c_void_p),
    ]


# fdpo_policy_loss_type: TRL's GRPO loss_type values, by their ABI codes.
POLICY_LOSS_TYPES = {"grpo": 0, "bnpo": 1, "dr_grpo": 2, "dapo": 3}
(POLICY_STAT_LOSS, POLICY_STAT_TOKENS, POLICY_STAT_LOW_CLIPPED, POLICY_STAT_HIGH_CLIPPED,
 POLICY_STAT_REGION_CLIPPED, POLICY_STAT_KL_SUM, POLICY_STAT_ENTROPY_SUM, POLICY_STAT_COUNT) = range(8)


class PolicyConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("loss_type", ctypes.c_int32),
        ("advantages", ctypes.c_void_p),
        ("advantages_per_token", ctypes.c_int32),
        ("old_logps", ctypes.c_void_p),
        ("ref_logps", ctypes.c_void_p),
        ("beta", ctypes.c_double),
        ("epsilon", ctypes.c_double),
        ("epsilon_high", ctypes.c_double),
        ("entropy_coef", ctypes.c_double),
        ("max_completion_length", ctypes.c_int64),
        ("num_items_in_batch", ctypes.c_double),
    ]


class PolicyOutputs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("token_logps", ctypes.c_void_p),
        ("token_grad", ctypes.c_void_p),
        ("stats", ctypes.c_void_p),
        ("grad", ctypes.c_void_p),
    ]


class CudaStatus(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("compiled", ctypes.c_int32),
        ("available", ctypes.c_int32),
        ("device_count", ctypes.c_int32),
        ("runtime_version", ctypes.c_int32),
        ("driver_version", ctypes.c_int32),
        ("reason", ctypes.c_char * 256),
    ]


class CudaLaunch(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("device", ctypes.c_int32),
        ("stream", ctypes.c_void_p),
        ("timings_ms", ctypes.c_void_p),
    ]


def new_struct(cls):
    """The *_init functions' first step: zeros, and struct_size set to this binding's size."""
    value = cls()
    value.struct_size = ctypes.sizeof(cls)
    return value


def _signatures(lib):
    P = ctypes.POINTER
    c = ctypes
    err = [c.c_char_p, c.c_size_t]
    table = {
        "fdpo_abi_version": (c.c_int32, []),
        "fdpo_cpu_simd_level": (c.c_char_p, []),
        "fdpo_loss_kind_info": (c.c_int32, [c.c_int32, P(c.c_char_p), P(c.c_uint32), P(c.c_uint32)]),
        "fdpo_loss_param_info": (c.c_int32, [c.c_int32, P(c.c_char_p), P(c.c_double)]),
        "fdpo_sequence_logps": (c.c_int32, [P(Tokens), c.c_int32, c.c_void_p, c.c_void_p, c.c_int32] + err),
        "fdpo_dpo_loss": (c.c_int32, [P(Tokens), P(LossConfig), P(LossOutputs), c.c_int32] + err),
        "fdpo_cuda_get_status": (c.c_int32, [P(CudaStatus)]),
        "fdpo_cuda_sequence_logps": (c.c_int32, [P(Tokens), c.c_int32, c.c_void_p, c.c_void_p, P(CudaLaunch)] + err),
        "fdpo_cuda_dpo_loss": (c.c_int32, [P(Tokens), P(LossConfig), P(LossOutputs), P(CudaLaunch)] + err),
        "fdpo_kto_loss": (c.c_int32, [P(Tokens), P(KtoConfig), P(KtoOutputs), c.c_int32] + err),
        "fdpo_cuda_kto_loss": (c.c_int32, [P(Tokens), P(KtoConfig), P(KtoOutputs), P(CudaLaunch)] + err),
        "fdpo_policy_loss": (c.c_int32, [P(Tokens), P(PolicyConfig), P(PolicyOutputs), c.c_int32] + err),
        "fdpo_cuda_policy_loss": (c.c_int32, [P(Tokens), P(PolicyConfig), P(PolicyOutputs), P(CudaLaunch)] + err),
    }
    for name, (restype, argtypes) in table.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _repo_library():
    # python/fused_dpo/_abi.py -> the repository root, where `npm run build:c` writes build-c/.
    return Path(__file__).resolve().parents[2] / "build-c" / "libfused_dpo.so"


def _load():
    named = os.environ.get("FUSED_DPO_LIB")
    path = Path(named) if named else _repo_library()
    if not path.is_file():
        where = f"FUSED_DPO_LIB={named}" if named else f"{path} (FUSED_DPO_LIB is not set)"
        raise FusedDpoError(
            f"libfused_dpo.so not found: {where}. Build it with `npm run build:c` in the fused-dpo "
            f"repository (it writes build-c/libfused_dpo.so), or set FUSED_DPO_LIB to the library's path"
        )
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        raise FusedDpoError(f"cannot load {path}: {error}") from error
    _signatures(lib)
    version = lib.fdpo_abi_version()
    if version != ABI_VERSION:
        raise FusedDpoError(f"{path} has C ABI {version}; this binding speaks ABI {ABI_VERSION} (a stale build?)")
    return lib, path


class Library:
    """The loaded libfused_dpo and the loss table it was built with."""

    def __init__(self):
        self.lib, self.path = _load()
        self.loss_kinds = self._read_kinds()
        self.hyperparameters = self._read_params()

    def _read_kinds(self):
        kinds = {}
        code = 0
        name, flags, reads = ctypes.c_char_p(), ctypes.c_uint32(), ctypes.c_uint32()
        while self.lib.fdpo_loss_kind_info(code, ctypes.byref(name), ctypes.byref(flags), ctypes.byref(reads)) == 0:
            kinds[name.value.decode()] = LossKind(code, flags.value, reads.value)
            code += 1
        return kinds

    def _read_params(self):
        """{snake_case name: (index, default)}; TRL's names are the table's, in snake case."""
        params = {}
        index = 0
        name, default = ctypes.c_char_p(), ctypes.c_double()
        while self.lib.fdpo_loss_param_info(index, ctypes.byref(name), ctypes.byref(default)) == 0:
            params[snake_case(name.value.decode())] = (index, default.value)
            index += 1
        return params

    def simd_level(self):
        return self.lib.fdpo_cpu_simd_level().decode()

    def cuda_status(self):
        status = new_struct(CudaStatus)
        self.lib.fdpo_cuda_get_status(ctypes.byref(status))
        return status

    def call(self, what, fn, *args):
        """Runs one fdpo_* entry point that takes an error buffer; raises with its message."""
        error = ctypes.create_string_buffer(512)
        status = fn(*args, error, ctypes.sizeof(error))
        if status != 0:
            message = error.value.decode(errors="replace") or "(no message)"
            raise _error_class(status)(f"{what}: {message} ({STATUS_NAMES.get(status, status)})", status)


class LossKind:
    __slots__ = ("code", "flags", "reads")

    def __init__(self, code, flags, reads):
        self.code, self.flags, self.reads = code, flags, reads

    @property
    def needs_ref(self):
        return bool(self.flags & KIND_NEEDS_REF)

    @property
    def reports_averaged(self):
        return bool(self.flags & KIND_REPORTS_AVERAGED)


def snake_case(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_library = None


def library():
    """The process's libfused_dpo, loaded on first use (FUSED_DPO_LIB, else build-c/ in the repository)."""
    global _library
    if _library is None:
        _library = Library()
    return _library
