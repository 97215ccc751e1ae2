"""Bad inputs give Python exceptions (the C ABI's own message where the library refuses them), never
a crash; the library is found or its absence explained; CUDA tensors go to the CUDA backend, and a
library that cannot run CUDA says so; the keywords are the library's hyperparameter table."""

import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import warnings
from pathlib import Path

import torch

from cases import batch
from fused_dpo import FusedDpoError, FusedDpoInvalidArgument, FusedDpoUnavailable, NonFiniteLogitsWarning, library
from fused_dpo.torch import _cuda_launch, dpo_loss, hyperparameters, kto_loss, policy_loss, sequence_logps


class NonFiniteLogitsAreNamed(unittest.TestCase):
    """A non-finite sequence log-prob (an inf, a NaN or a logit beyond +-1.7e38 in a scored row) is
    a NonFiniteLogitsWarning naming the sequence and the row, from every call; a clean call, or a
    NaN in an ignored row (never read), warns nothing."""

    def calls(self, logits, labels):
        _, _, ref_c, ref_r = batch()
        ref = torch.cat([ref_c, ref_r])
        desirable = [True, False] * 4
        return {
            "dpo_loss": lambda: dpo_loss(logits, labels, ref_c, ref_r),
            "kto_loss": lambda: kto_loss(logits, labels, desirable, ref, ref, ref),
            "sequence_logps": lambda: sequence_logps(logits, labels),
            "policy_loss": lambda: policy_loss(logits, labels, torch.randn(8, dtype=torch.float64)),
        }

    def scored_and_ignored(self, labels):
        scored = [(s, t) for s in range(labels.shape[0]) for t in range(labels.shape[1]) if labels[s, t] != -100]
        ignored = [(s, t) for s in range(labels.shape[0]) for t in range(labels.shape[1]) if labels[s, t] == -100]
        return scored[len(scored) // 2], ignored[0]

    def test_the_sequence_and_row_are_named(self):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            logits, labels, _, _ = batch(dtype=dtype)
            (s, t), _ = self.scored_and_ignored(labels)
            for value in (float("inf"), float("nan")):
                bad = logits.clone()
                bad[s, t, 5] = value
                for name, call in self.calls(bad, labels).items():
                    with self.subTest(dtype=dtype, value=value, call=name):
                        pattern = rf"{name}: sequence {s}'s log-prob is .*: row {s * labels.shape[1] + t} holds an inf, a NaN"
                        with self.assertWarnsRegex(NonFiniteLogitsWarning, pattern):
                            call()
        logits, labels, _, _ = batch()
        (s, t), _ = self.scored_and_ignored(labels)
        bad = logits.clone()
        bad[s, t, 0], bad[s, t, 1] = 3e38, -3e38  # finite, but z - max overflows float32
        labels = labels.clone()
        labels[s, t] = 1
        with self.assertWarnsRegex(NonFiniteLogitsWarning, rf"row {s * labels.shape[1] + t} holds"):
            sequence_logps(bad, labels)

    def test_in_place_the_row_is_not_known(self):
        logits, labels, ref_c, ref_r = batch()
        (s, t), _ = self.scored_and_ignored(labels)
        x = logits.clone().requires_grad_(True)
        h = x * 1.0
        with torch.no_grad():
            h[s, t, 2] = float("nan")
        with self.assertWarnsRegex(NonFiniteLogitsWarning, rf"sequence {s}'s log-prob is nan.*inplace=True wrote the gradient"):
            dpo_loss(h, labels, ref_c, ref_r, inplace=True)

    def test_clean_calls_and_ignored_rows_warn_nothing(self):
        logits, labels, _, _ = batch()
        _, (s, t) = self.scored_and_ignored(labels)
        noisy = logits.clone()
        noisy[s, t, :] = float("nan")
        for inputs in (logits, noisy):
            for name, call in self.calls(inputs, labels).items():
                with self.subTest(call=name), warnings.catch_warnings():
                    warnings.simplefilter("error", NonFiniteLogitsWarning)
                    call()


class PolicyInputsMustBeFinite(unittest.TestCase):
    def test_non_finite_values_are_refused_where_read_and_only_there(self):
        logits, labels, _, _ = batch()
        g = torch.Generator().manual_seed(3)
        values = {name: torch.randn(labels.shape, generator=g, dtype=torch.float64) - 2 for name in ("advantages", "old_logps", "ref_logps")}
        flat = labels.reshape(-1)
        scored = int((flat != -100).nonzero()[0, 0])
        ignored = int((flat == -100).nonzero()[0, 0])
        want, _, _ = policy_loss(logits, labels, beta=0.1, **values)
        for name in values:
            for bad in (float("nan"), float("inf")):
                changed = values[name].clone().reshape(-1)
                changed[scored] = bad
                with self.subTest(name=name, bad=bad), self.assertRaisesRegex(
                    ValueError, rf"policy_loss: {name}\[{scored}\] must be a finite number \(row {scored} is scored\)"
                ):
                    policy_loss(logits, labels, beta=0.1, **{**values, name: changed.reshape(labels.shape)})
            changed = values[name].clone().reshape(-1)
            changed[ignored] = float("nan")
            got, _, _ = policy_loss(logits, labels, beta=0.1, **{**values, name: changed.reshape(labels.shape)})
            self.assertEqual(got.item(), want.item(), f"{name}: NaN in ignored row {ignored}")
        per_sequence = torch.tensor([0.5, float("nan"), 1, 2, 0, 0, 1, 1], dtype=torch.float64)
        with self.assertRaisesRegex(ValueError, r"advantages\[1\] must be a finite number \(one per sequence\)"):
            policy_loss(logits, labels, per_sequence)


class CApiMessages(unittest.TestCase):
    def setUp(self):
        self.logits, self.labels, self.ref_c, self.ref_r = batch()

    def test_a_label_out_of_range_is_the_libraries_message(self):
        labels = self.labels.clone()
        labels[1, 4] = 37
        for call in (
            lambda: dpo_loss(self.logits.requires_grad_(True), labels, self.ref_c, self.ref_r),
            lambda: sequence_logps(self.logits, labels),
        ):
            with self.assertRaises(FusedDpoInvalidArgument) as caught:
                call()
            self.assertIsInstance(caught.exception, ValueError)
            self.assertEqual(caught.exception.status_name, "FDPO_ERR_INVALID_ARGUMENT")
            self.assertIn(f"labels[{1 * 7 + 4}] = 37 is outside [0, 37)", str(caught.exception))

    def test_bad_cu_seqlens_are_the_libraries_message(self):
        rows = self.logits.reshape(-1, 37)
        flat = self.labels.reshape(-1)
        cases = {
            "cu_seqlens must end at rows (56), got 50": [0, 7, 14, 21, 28, 35, 42, 49, 50],
            "cu_seqlens decreases at 2": [0, 9, 7, 21, 28, 35, 42, 49, 56],
            "cu_seqlens[0] must be 0": [1, 7, 14, 21, 28, 35, 42, 49, 56],
        }
        for message, cu in cases.items():
            with self.subTest(message=message):
                with self.assertRaisesRegex(FusedDpoInvalidArgument, message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
                    dpo_loss(rows, flat, self.ref_c, self.ref_r, cu_seqlens=cu)

    def test_python_side_checks_name_the_argument(self):
        x, y, c, r = self.logits, self.labels, self.ref_c, self.ref_r
        cases = [
            (TypeError, "unexpected keyword argument 'loss_typ'", lambda: dpo_loss(x, y, c, r, loss_typ="ipo")),
            (TypeError, "unexpected keyword argument 'rpo_alpha'", lambda: dpo_loss(x, y, c, r, rpo_alpha=1.0)),
            (ValueError, "unknown loss_type 'dpo'; this library has sigmoid, hinge", lambda: dpo_loss(x, y, c, r, loss_type="dpo")),
            (TypeError, "logits must be float32, bfloat16 or float16, got torch.float64", lambda: dpo_loss(x.double(), y, c, r)),
            (TypeError, "labels must be an integer tensor", lambda: dpo_loss(x, y.float(), c, r)),
            (ValueError, r"labels must have shape \[8, 7\]", lambda: dpo_loss(x, y[:, :-1], c, r)),
            (ValueError, "2B sequences", lambda: dpo_loss(x[:7], y[:7], c, r)),
            (ValueError, r"logits must be \[2B, T, V\]", lambda: dpo_loss(x[0], y[0], c, r)),
            (TypeError, "loss_type 'sigmoid' needs ref_chosen_logps", lambda: dpo_loss(x, y)),
            (ValueError, "ref_chosen_logps must hold B = 4 values", lambda: dpo_loss(x, y, c[:3], r)),
            (ValueError, "beta must be a finite number > 0, got 0", lambda: dpo_loss(x, y, c, r, beta=0)),
            (ValueError, "beta must be a finite number > 0, got nan", lambda: dpo_loss(x, y, c, r, beta=float("nan"))),
            (ValueError, r"label_smoothing must be a number in \[0, 0.5\]", lambda: dpo_loss(x, y, c, r, label_smoothing=0.7)),
            (ValueError, "below 0.5 for loss_type 'robust'", lambda: dpo_loss(x, y, c, r, loss_type="robust", label_smoothing=0.5)),
            (ValueError, "loss_weights must be 2 finite numbers", lambda: dpo_loss(x, y, c, r, loss_type=["sigmoid", "sft"], loss_weights=[1])),
            (ValueError, "reduction must be 'mean' or 'sum'", lambda: dpo_loss(x, y, c, r, reduction="max")),
            (ValueError, "labels hold values outside int32", lambda: dpo_loss(x, y + 2**40, c, r)),
            (ValueError, "logits are on device 'meta'", lambda: dpo_loss(x.to("meta"), y, c, r)),
        ]
        for error, message, call in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(error, message):
                    call()

    def test_kto_and_the_new_keywords_name_the_argument(self):
        x, y, c, r = self.logits, self.labels, self.ref_c, self.ref_r
        ref, flags, kl = torch.cat([c, r]), [True, False] * 4, torch.tensor([-3.0, -2.0])
        cases = [
            (TypeError, "unexpected keyword argument 'ld_alpha'", lambda: kto_loss(x, y, flags, ref, kl, kl, ld_alpha=0.5)),
            (ValueError, "desirable must be 8 bools", lambda: kto_loss(x, y, flags[:5], ref, kl, kl)),
            (ValueError, "desirable must be 8 bools", lambda: kto_loss(x, y, [2] * 8, ref, kl, kl)),
            (ValueError, "ref_logps must hold 8 values", lambda: kto_loss(x, y, flags, ref[:7], kl, kl)),
            (TypeError, "needs kl_logps and ref_kl_logps", lambda: kto_loss(x, y, flags, ref)),
            (ValueError, "ref_kl_logps must hold 2 values", lambda: kto_loss(x, y, flags, ref, kl, kl[:1])),
            (ValueError, r"ref_logps\[3\] must be a finite number, got nan", lambda: kto_loss(x, y, flags, ref.index_fill(0, torch.tensor([3]), float("nan")), kl, kl)),
            (ValueError, r"kl_logps\[1\] must be a finite number, got inf", lambda: kto_loss(x, y, flags, ref, kl.index_fill(0, torch.tensor([1]), float("inf")), kl)),
            (ValueError, "has no KL term", lambda: kto_loss(x, y, flags, ref, kl, kl, loss_type="apo_zero_unpaired")),
            (ValueError, "loss_type must be one of kto, apo_zero_unpaired", lambda: kto_loss(x, y, flags, ref, kl, kl, loss_type="sigmoid")),
            (ValueError, "desirable_weight must be a finite number >= 0", lambda: kto_loss(x, y, flags, ref, kl, kl, desirable_weight=-1)),
            (ValueError, "softcap must be a finite number > 0", lambda: dpo_loss(x, y, c, r, softcap=0)),
            (TypeError, "use_weighting must be a bool", lambda: dpo_loss(x, y, c, r, use_weighting=1)),
            (ValueError, "alpha must be a finite number", lambda: dpo_loss(x, y, loss_type="simpo", alpha=float("inf"))),
            (ValueError, "read by loss_type 'simpo' only", lambda: dpo_loss(x, y, c, r, alpha=0.5)),
        ]
        for error, message, call in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(error, message):
                    call()
        # one-sided batches are fine (TRL logs only the side present)
        _, metrics = kto_loss(x, y, [True] * 8, ref, kl, kl)
        self.assertNotIn("count/rejected", metrics)

    def test_the_keywords_are_the_libraries_hyperparameters_with_its_defaults(self):
        signature = inspect.signature(dpo_loss).parameters
        for name, default in hyperparameters().items():
            self.assertIn(name, signature, f"dpo_loss has no keyword for the library's {name}")
            self.assertEqual(signature[name].kind, inspect.Parameter.KEYWORD_ONLY)
            self.assertEqual(signature[name].default, default, name)


class LibraryLookup(unittest.TestCase):
    def run_python(self, code, **env):
        python_dir = Path(__file__).resolve().parents[1]
        environment = {**os.environ, "PYTHONPATH": str(python_dir), **env}
        return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)

    def test_a_missing_library_says_how_to_build_it(self):
        result = self.run_python(
            "import torch\nfrom fused_dpo.torch import dpo_loss\n"
            "try:\n    dpo_loss(torch.zeros(2, 1, 3), torch.zeros(2, 1, dtype=torch.long))\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n",
            FUSED_DPO_LIB="/nonexistent/libfused_dpo.so",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("FusedDpoError libfused_dpo.so not found: FUSED_DPO_LIB=/nonexistent/libfused_dpo.so", result.stdout)
        self.assertIn("npm run build:c", result.stdout)

    def test_fused_dpo_lib_names_the_library_else_build_c_in_the_repository(self):
        show = "import fused_dpo\nprint(fused_dpo.library().path)"
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "libfused_dpo-copy.so"
            shutil.copyfile(library().path, copy)
            named = self.run_python(show, FUSED_DPO_LIB=str(copy))
            self.assertEqual(named.stdout.strip(), str(copy), named.stderr)
        environment = {k: v for k, v in os.environ.items() if k != "FUSED_DPO_LIB"}
        python_dir = Path(__file__).resolve().parents[1]
        default = subprocess.run([sys.executable, "-c", "import fused_dpo._abi as a\nprint(a._repo_library())"],
                                 env={**environment, "PYTHONPATH": str(python_dir)}, capture_output=True, text=True)
        self.assertEqual(default.stdout.strip(), str(python_dir.parent / "build-c" / "libfused_dpo.so"), default.stderr)


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor that reports a CUDA device: enough to follow dpo_loss's dispatch without a GPU."""

    @property
    def device(self):
        return torch.device("cuda", 0)

    @property
    def is_cuda(self):
        return True


class CudaDispatch(unittest.TestCase):
    def setUp(self):
        status = library().cuda_status()
        if status.compiled and status.available:
            self.skipTest("this library runs CUDA here: test_cuda.py covers the real thing")
        self.reason = status.reason.decode()

    def test_cuda_tensors_go_to_the_cuda_backend_which_says_why_it_cannot_run(self):
        logits, labels, ref_c, ref_r = batch()
        x, y = logits.as_subclass(FakeCudaTensor), labels.as_subclass(FakeCudaTensor)
        for call in (lambda: dpo_loss(x.requires_grad_(True), y, ref_c, ref_r), lambda: sequence_logps(x, y)):
            with self.assertRaises(FusedDpoUnavailable) as caught:
                call()
            self.assertIn(f"the tensors are on cuda:0 but {library().path} cannot run CUDA: {self.reason}", str(caught.exception))
        with self.assertRaises(FusedDpoUnavailable):
            _cuda_launch(torch.device("cuda", 0))

    def test_labels_on_another_device_are_refused(self):
        logits, labels, ref_c, ref_r = batch()
        with self.assertRaisesRegex(ValueError, "labels are on cpu, the logits on cuda:0"):
            dpo_loss(logits.as_subclass(FakeCudaTensor), labels, ref_c, ref_r)


if __name__ == "__main__":
    unittest.main()
