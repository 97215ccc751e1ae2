// backendInfo() and the FDPO_SIMD environment variable, seen from a fresh process.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { existsSync } from 'node:fs';

import { doctor, formatDoctor } from '../lib/doctor.js';
import { backendInfo } from '../lib/index.js';

const lib = join(dirname(fileURLToPath(import.meta.url)), '..', 'lib', 'index.ts');

function simdIn(env: Record<string, string>): string {
  const script = `import { backendInfo } from ${JSON.stringify(lib)}; console.log(backendInfo().simd);`;
  return execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    env: { ...process.env, ...env },
  })
    .toString()
    .trim();
}

test('backendInfo names the backend, SIMD level, threads and ABI version', () => {
  const info = backendInfo();
  assert.is(info.backend, 'cpu');
  assert.ok(['avx512', 'avx2', 'baseline'].includes(info.simd), info.simd);
  assert.ok(Number.isInteger(info.threads) && info.threads >= 1);
  assert.is(info.abiVersion, 1);
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
  for (const c of report.checks) assert.ok(c.ok, `${c.case}: loss ${c.lossRelError}, grad ${c.gradRelError}`);
  assert.ok(report.ok);
  assert.match(formatDoctor(report), /all good$/);
});

test.run();
