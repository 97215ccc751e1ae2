// The kernels' scalar conversions between float and the 16-bit formats (csrc/core/half_convert.h,
// which every SIMD level's tails, the baseline level and the CUDA kernels use) on every input
// that matters: test/native/check_half_convert.cpp, against the CPU's F16C instructions for fp16
// and rounding by value for bf16. (The TypeScript conversions have their own exhaustive tests in
// test/reference.test.ts; the kernels' results are compared with those within tolerances only.)
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { arch, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { skip } from './helpers/skip.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const hasCmake = spawnSync('cmake', ['--version']).status === 0;

test('half_convert.h: fp16 and bf16 to float, all 65536 patterns; float to fp16, all 2^32 floats; float to bf16, every rounding case', () => {
  if (!hasCmake) return skip('native-checks', 'cmake not found');
  if (arch() !== 'x64') return skip('native-checks', `the fp16 reference is x86's F16C; this is ${arch()}`);
  const build = mkdtempSync(join(tmpdir(), 'fdpo-half-'));
  execFileSync('cmake', ['-S', root, '-B', build, '-DFDPO_BUILD_TESTS=ON', '-DFDPO_CUDA=OFF', '-DCMAKE_BUILD_TYPE=Release'], { stdio: 'pipe' });
  execFileSync('cmake', ['--build', build, '--target', 'check_half_convert'], { stdio: 'pipe' });
  const run = spawnSync(join(build, 'check_half_convert'), { encoding: 'utf8' });
  if (run.status === 77) return skip('native-checks', run.stdout.trim());
  assert.is(run.status, 0, `check_half_convert failed:\n${run.stdout}${run.stderr}`);
  assert.match(run.stdout, /floatToF16: all 2\^32 floats, 0 mismatches/);
  assert.match(run.stdout, /all hold/);
});

test.run();
