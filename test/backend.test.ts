// backendInfo() and the FDPO_SIMD environment variable, seen from a fresh process.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';

import { doctor, formatDoctor } from '../lib/doctor.js';
import { ABI_VERSION } from '../lib/binding.js';
import { backendInfo } from '../lib/index.js';

const lib = join(dirname(fileURLToPath(import.meta.url)), '..', 'lib', 'index.ts');

/** Runs `expression` (over backendInfo) in a fresh process with env; prints its JSON or the error's code and message. */
function inFreshProcess(env: Record<string, string>, expression: string): string {
  const script =
    `import { backendInfo } from ${JSON.stringify(lib)};` +
    `try { console.log(JSON.stringify(${expression})); } catch (e) { console.log(e.code + ': ' + e.message); }`;
  return execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    env: { ...process.env, ...env },
  })
    .toString()
    .trim();
}

function simdIn(env: Record<string, string>): string {
  return JSON.parse(inFreshProcess(env, 'backendInfo().simd')) as string;
}

const cudaAvailable = backendInfo().cuda.devices.length > 0;

test('backendInfo names the backend, SIMD level, threads, ABI version and CUDA status', () => {
  const info = backendInfo();
  const forcedCpu = process.env.FUSED_DPO_BACKEND === 'cpu';
  assert.is(info.backend, cudaAvailable && !forcedCpu ? 'cuda' : 'cpu');
  assert.ok(['avx512', 'avx2', 'neon', 'baseline', 'baseline-mul-add'].includes(info.simd), info.simd);
  assert.is(info.sameBitsAsOtherLevels, info.simd !== 'baseline-mul-add');
  assert.is(info.threads, availableParallelism(), 'the default thread count is os.availableParallelism()');
  assert.is(info.abiVersion, ABI_VERSION);
  assert.type(info.cuda.compiled, 'boolean');
  if (info.cuda.compiled) assert.match(info.cuda.runtimeVersion ?? '', /^\d+\.\d+$/);
  else assert.is(info.cuda.runtimeVersion, null);
  // Whenever CUDA is not the backend, backendInfo says why.
  if (info.backend === 'cpu') assert.ok(info.cuda.reason && info.cuda.reason.length > 5, String(info.cuda.reason));
  else assert.is(info.cuda.reason, null);
});

test('FUSED_DPO_BACKEND=cpu is obeyed; =cuda without CUDA and unknown names are clear errors', () => {
  const cpu = JSON.parse(inFreshProcess({ FUSED_DPO_BACKEND: 'cpu' }, 'backendInfo()')) as { backend: string; cuda: { reason: string } };
  assert.is(cpu.backend, 'cpu');
  assert.is(cpu.cuda.reason, 'FUSED_DPO_BACKEND=cpu');
  assert.match(inFreshProcess({ FUSED_DPO_BACKEND: 'tpu' }, 'backendInfo()'), /^ERR_FDPO_INVALID_ARGUMENT: .*FUSED_DPO_BACKEND must be 'cpu', 'cuda' or unset, got "tpu"/);
  const cuda = inFreshProcess({ FUSED_DPO_BACKEND: 'cuda' }, 'backendInfo().backend');
  if (cudaAvailable) assert.is(cuda, '"cuda"');
  else assert.match(cuda, /^ERR_FDPO_CUDA_UNAVAILABLE: fused-dpo: FUSED_DPO_BACKEND=cuda, but CUDA cannot be used here: .{6,}/);
});

test('FDPO_SIMD picks a level the CPU supports and is ignored otherwise', () => {
  assert.is(simdIn({ FDPO_SIMD: 'baseline' }), 'baseline');
  const widest = simdIn({ FDPO_SIMD: '' });
  assert.is(simdIn({ FDPO_SIMD: 'no-such-level' }), widest);
  if (widest !== 'baseline') assert.is(simdIn({ FDPO_SIMD: 'avx2' }), 'avx2');
});

test('doctor: finds the binary it loaded and passes its self-check', () => {
  const report = doctor();
  assert.ok(existsSync(report.binary), report.binary);
  assert.ok(report.checks.length >= 6);
  assert.ok(['FUSED_DPO_NATIVE', 'prebuild', 'local build'].includes(report.binarySource), report.binarySource);
  assert.ok(report.cuda.length > 10, report.cuda);
  for (const c of report.checks) assert.ok(c.ok, `${c.case}: loss ${c.lossRelError}, grad ${c.gradRelError}`);
  assert.ok(report.ok);
  assert.match(formatDoctor(report), /all good$/);
});

test.run();
