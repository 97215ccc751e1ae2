// The C ABI without Node: CMake builds libfused_dpo.so and test/c-abi/check_loss.c against it;
// the program's loss, sequence sums and gradient must match the float64 reference; and
// test/native/check_levels.cpp, every SIMD level's bits through the C ABI.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { checkLossProgram } from './helpers/check-loss-program.js';
import { testSeed } from './helpers/random.js';
import { skip } from './helpers/skip.js';

const SEED = testSeed();
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const hasCmake = spawnSync('cmake', ['--version']).status === 0;

test('a C program linked against libfused_dpo gets the reference loss and gradient', () => {
  if (!hasCmake) return skip('c-abi', 'cmake not found');
  const build = mkdtempSync(join(tmpdir(), 'fdpo-c-abi-'));
  // CPU only: test/cuda-build.test.ts builds the library with CUDA.
  execFileSync('cmake', ['-S', root, '-B', build, '-DFDPO_BUILD_TESTS=ON', '-DFDPO_CUDA=OFF', '-DCMAKE_BUILD_TYPE=Release'], { stdio: 'pipe' });
  execFileSync('cmake', ['--build', build, '--target', 'check_loss', 'check_levels', '-j', '2'], { stdio: 'pipe' });

  checkLossProgram(SEED, build, (file) => execFileSync(join(build, 'check_loss'), [file]).toString(), 'this machine');
  // test/native/check_levels.cpp: every level this CPU runs, the same bits (as test/simd-levels.test.ts checks through Node).
  const levels = execFileSync(join(build, 'check_levels')).toString();
  assert.match(levels, /every level gives the same bits|only one level runs here/, levels);
});

test.run();
