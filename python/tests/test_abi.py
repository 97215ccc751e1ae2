"""The binding's copy of the C ABI (fused_dpo/_abi.py) against the header it copies
(csrc/core/fused_dpo.h, fused_dpo_kinds.h): every struct's fields are the header's, in order and
of the same C types (a prefix of them: the library reads only the struct_size bytes a caller
passes, so a binding may stop before fields added later), and every enum value and constant the
binding states by hand is the header's. A mismatch here would misread memory or mislabel an
error, with nothing at run time to say so."""

import ctypes
import re
import unittest
from pathlib import Path

from fused_dpo import _abi

HEADERS = Path(__file__).resolve().parents[2] / "csrc" / "core"
TEXT = "\n".join((HEADERS / name).read_text() for name in ("fused_dpo.h", "fused_dpo_kinds.h"))
# Comments out, so a field's comment cannot look like a declaration.
CODE = re.sub(r"/\*.*?\*/", " ", TEXT, flags=re.S)

CTYPES = {
    "uint8_t": ctypes.c_uint8,
    "uint32_t": ctypes.c_uint32,
    "int32_t": ctypes.c_int32,
    "int64_t": ctypes.c_int64,
    "double": ctypes.c_double,
    "float": ctypes.c_float,
    "char": ctypes.c_char,
}

STRUCTS = {
    "fdpo_tokens": _abi.Tokens,
    "fdpo_loss_config": _abi.LossConfig,
    "fdpo_loss_outputs": _abi.LossOutputs,
    "fdpo_kto_config": _abi.KtoConfig,
    "fdpo_kto_outputs": _abi.KtoOutputs,
    "fdpo_policy_config": _abi.PolicyConfig,
    "fdpo_policy_outputs": _abi.PolicyOutputs,
    "fdpo_cuda_status": _abi.CudaStatus,
    "fdpo_cuda_launch": _abi.CudaLaunch,
}


def constant(name):
    """A #define's or an enumerator's integer value in the headers."""
    found = re.search(rf"#define {name} (\d+)u?\b", CODE)
    if found:
        return int(found.group(1))
    for body in re.findall(r"typedef enum \{(.*?)\}", CODE, flags=re.S):
        value = -1
        for item in (part.strip() for part in body.split(",")):
            if not item:
                continue
            key, _, given = item.partition("=")
            value = int(given) if given.strip() else value + 1
            if key.strip() == name:
                return value
    raise AssertionError(f"{name} is not in the headers")


def header_fields(struct):
    """(name, ctypes type) of each field of `typedef struct {...} struct;`, in order."""
    body = re.search(r"typedef struct \{([^{}]*)\}\s*" + struct + r";", CODE)
    if body is None:
        raise AssertionError(f"{struct} is not in the headers")
    fields = []
    for declaration in filter(None, (d.strip() for d in body.group(1).split(";"))):
        kind, names = re.match(r"((?:const\s+)?\w+\s*\**)\s*(.*)", declaration).groups()
        for name in (n.strip() for n in names.split(",")):
            pointer = "*" in kind or name.startswith("*")
            name = name.lstrip("*").strip()
            count = re.match(r"(\w+)\[(\w+)\]", name)
            base = ctypes.c_void_p if pointer else CTYPES[kind.replace("const", "").strip()]
            if count:
                name, size = count.group(1), count.group(2)
                base = base * (int(size) if size.isdigit() else constant(size))
            fields.append((name, base))
    return fields


def same_type(a, b):
    if issubclass(a, ctypes.Array) or issubclass(b, ctypes.Array):
        return (issubclass(a, ctypes.Array) and issubclass(b, ctypes.Array) and a._length_ == b._length_
                and same_type(a._type_, b._type_))
    return ctypes.sizeof(a) == ctypes.sizeof(b) and a._type_ == b._type_


class BindingIsTheHeader(unittest.TestCase):
    def test_every_struct_is_a_prefix_of_the_headers_fields(self):
        for struct, binding in STRUCTS.items():
            with self.subTest(struct=struct):
                want = header_fields(struct)
                got = binding._fields_
                self.assertLessEqual(len(got), len(want), f"{binding.__name__} has fields the header does not")
                for i, ((name, kind), (want_name, want_kind)) in enumerate(zip(got, want)):
                    self.assertEqual(name, want_name, f"{binding.__name__} field {i}")
                    self.assertTrue(same_type(kind, want_kind), f"{binding.__name__}.{name}: {kind} vs {want_kind}")

    def test_the_constants_are_the_headers(self):
        self.assertEqual(_abi.ABI_VERSION, constant("FDPO_ABI_VERSION"))
        self.assertEqual(_abi.MAX_LOSSES, constant("FDPO_MAX_LOSSES"))
        self.assertEqual(_abi.MAX_PARAMS, constant("FDPO_MAX_PARAMS"))
        self.assertEqual((_abi.FLOAT32, _abi.BFLOAT16, _abi.FLOAT16),
                         tuple(constant(f"FDPO_{n}") for n in ("FLOAT32", "BFLOAT16", "FLOAT16")))
        for code, name in _abi.STATUS_NAMES.items():
            self.assertEqual(code, constant(name), name)
        for name in ("LOSS", "CHOSEN_LOGIT_SUM", "CHOSEN_TOKENS", "REJECTED_LOGIT_SUM", "REJECTED_TOKENS",
                     "ENTROPY_SUM", "CHOSEN_CORRECT", "COUNT"):
            self.assertEqual(getattr(_abi, f"STAT_{name}"), constant(f"FDPO_STAT_{name}"), name)
        for name in ("LOSS", "TOKENS", "LOW_CLIPPED", "HIGH_CLIPPED", "REGION_CLIPPED", "KL_SUM", "ENTROPY_SUM", "COUNT"):
            self.assertEqual(getattr(_abi, f"POLICY_STAT_{name}"), constant(f"FDPO_POLICY_STAT_{name}"), name)
        self.assertEqual(_abi.KIND_NEEDS_REF, constant("FDPO_KIND_NEEDS_REF"))
        self.assertEqual(_abi.KIND_REPORTS_AVERAGED, constant("FDPO_KIND_REPORTS_AVERAGED"))
        for name, code in _abi.F_DIVERGENCES.items():
            self.assertEqual(code, constant(f"FDPO_F_{name.upper()}"), name)

    def test_the_parser_reads_what_it_checks(self):
        # (A parser that found nothing would make the checks above pass vacuously.)
        self.assertEqual(header_fields("fdpo_cuda_launch")[2], ("stream", ctypes.c_void_p))
        self.assertEqual(header_fields("fdpo_loss_config")[2][1]._length_, constant("FDPO_MAX_LOSSES"))
        self.assertEqual(constant("FDPO_STAT_COUNT"), 7)
        self.assertEqual([name for name, _ in header_fields("fdpo_cuda_status")][-1], "reason")
        self.assertEqual(len(header_fields("fdpo_tokens")), len(_abi.Tokens._fields_))

if __name__ == "__main__":
    unittest.main()
