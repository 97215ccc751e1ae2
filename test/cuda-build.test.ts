// The CUDA backend compiles wherever nvcc is (CI has it, with no GPU): CMake builds libfused_dpo
// with it, and the compiler's resource report for the row kernels, which that build asks for, shows
// no spills and no local memory in pass A or pass B, for every architecture.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { skip } from './helpers/skip.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const nvcc = spawnSync('nvcc', ['--version']).status === 0 || existsSync('/usr/local/cuda/bin/nvcc');
const cmake = spawnSync('cmake', ['--version']).status === 0;

test('libfused_dpo builds with CUDA, and the hot kernels neither spill nor use local memory', () => {
  if (!nvcc || !cmake) return skip('cuda-build', 'nvcc or cmake not found');
  const build = mkdtempSync(join(tmpdir(), 'fdpo-cuda-'));
  // The report is printed on request only (CMakeLists.txt): ask for it.
  const configure = execFileSync('cmake', ['-S', root, '-B', build, '-DCMAKE_BUILD_TYPE=Release', '-DFDPO_PTXAS_REPORT=ON'], { stdio: 'pipe' }).toString();
  assert.match(configure, /fused-dpo: CUDA backend ON/);
  // (ptxas writes its report to stderr)
  const run = spawnSync('cmake', ['--build', build, '--target', 'fused_dpo_c', '-j', '4'], { encoding: 'utf8' });
  assert.is(run.status, 0, run.stderr);
  const log = run.stdout + run.stderr;
  assert.ok(existsSync(join(build, 'libfused_dpo.so')));

  // ptxas prints, per kernel and architecture: "Compiling entry function '<name>' for 'sm_NN'",
  // then "<n> bytes stack frame, <n> bytes spill stores, <n> bytes spill loads".
  const kernels = [...log.matchAll(/Compiling entry function '([^']+)' for '(sm_\d+)'[\s\S]*?(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/g)];
  const hot = kernels.filter((k) => /forwardKernel|backwardKernel/.test(k[1]!));
  const architectures = new Set(hot.map((k) => k[2]));
  assert.equal([...architectures].sort(), ['sm_80', 'sm_86', 'sm_89', 'sm_90'], 'a resource report for every architecture');
  assert.ok(hot.length >= 4 * 18, `${hot.length} pass A/B kernel reports`);
  for (const [, name, arch, stack, stores, loads] of hot) {
    assert.ok(stack === '0' && stores === '0' && loads === '0', `${name} on ${arch}: ${stack} B stack, ${stores} B spill stores, ${loads} B spill loads`);
  }
});

test.run();
