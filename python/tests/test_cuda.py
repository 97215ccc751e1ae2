"""CUDA tensors on a GPU: the loss, metrics and gradient equal the CPU backend's, the gradient stays
on the device (no host copy of the logits), and the call runs on the caller's current stream.
Skipped where torch or the library has no CUDA device (test/python.test.ts reports the skip)."""

import unittest

import torch

from cases import batch
from fused_dpo import library
from fused_dpo.torch import dpo_loss, sequence_logps


def cuda_here():
    status = library().cuda_status()
    return torch.cuda.is_available() and bool(status.compiled and status.available)


@unittest.skipUnless(cuda_here(), "no CUDA device for torch and libfused_dpo here")
class CudaMatchesCpu(unittest.TestCase):
    def run_both(self, dtype, loss_type="sigmoid", **options):
        logits, labels, ref_c, ref_r = batch(pairs=4, steps=33, vocab=1031, dtype=dtype)
        host = logits.clone().requires_grad_(True)
        host_loss, host_metrics = dpo_loss(host, labels, ref_c, ref_r, loss_type=loss_type, **options)
        host_loss.backward()
        device = logits.cuda().requires_grad_(True)
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            loss, metrics = dpo_loss(device, labels.cuda(), ref_c.cuda(), ref_r.cuda(), loss_type=loss_type, **options)
            (loss * 0.5).backward()
        stream.synchronize()
        return host_loss, host.grad, host_metrics, loss, device.grad, metrics

    def test_loss_metrics_and_gradient_equal_the_cpu_backends(self):
        for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)):
            with self.subTest(dtype=dtype):
                host_loss, host_grad, host_metrics, loss, grad, metrics = self.run_both(dtype)
                self.assertEqual(loss.device.type, "cuda")
                self.assertEqual((grad.device.type, grad.dtype), ("cuda", dtype))
                self.assertLessEqual(abs(loss.item() - host_loss.item()), 1e-5 * abs(host_loss.item()))
                error = ((grad.double().cpu() - 0.5 * host_grad.double()).norm() / (0.5 * host_grad.double()).norm()).item()
                self.assertLessEqual(error, tolerance)
                for key, value in host_metrics.items():
                    self.assertLessEqual(abs(metrics[key] - value), 1e-4 * abs(value) + 1e-5, key)

    def test_inplace_writes_the_gradient_into_the_device_logits(self):
        logits, labels, ref_c, ref_r = batch()
        x = logits.cuda().requires_grad_(True)
        h = x * 1.0
        pointer = h.data_ptr()
        loss, _ = dpo_loss(h, labels.cuda(), ref_c, ref_r, inplace=True)
        loss.backward()
        self.assertEqual(h.data_ptr(), pointer)
        self.assertTrue(torch.equal(h.detach(), x.grad))

    def test_per_token_references_equal_the_cpu_backends(self):
        logits, labels, _, _ = batch(pairs=4, steps=33, vocab=1031)
        g = torch.Generator().manual_seed(5)
        per_token = -2.5 + torch.randn(labels.shape, generator=g, dtype=torch.float64)
        host, _ = dpo_loss(logits, labels, ref_token_logps=per_token, ld_alpha=0.5)
        device, _ = dpo_loss(logits.cuda(), labels.cuda(), ref_token_logps=per_token.cuda(), ld_alpha=0.5)
        self.assertLessEqual(abs(device.item() - host.item()), 1e-5 * abs(host.item()))

    def test_sequence_logps_on_the_device(self):
        logits, labels, _, _ = batch()
        want, counts = sequence_logps(logits, labels)
        got, got_counts = sequence_logps(logits.cuda(), labels.cuda())
        self.assertEqual(got.device.type, "cuda")
        self.assertTrue(torch.equal(got_counts.cpu(), counts))
        self.assertLessEqual((got.cpu() - want).abs().max().item(), 1e-4)


if __name__ == "__main__":
    unittest.main()
