// The CPU backend on aarch64, where it has its own SIMD level (neon, csrc/core/row_kernels_neon.cpp)
// and the portable baseline: libfused_dpo and the check programs cross-built with Debian's
// aarch64 toolchain (crossbuild-essential-arm64) and run under qemu-user. Both levels must give
// the float64 reference's loss and gradient (test/c-abi/check_loss.c) and the same bits as each
// other on every dtype and the shapes that hit the tails and chunks (test/native/check_levels.cpp).
// Correctness only: qemu says nothing about speed.
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
const CROSS = 'aarch64-linux-gnu';
const SYSROOT = `/usr/${CROSS}`; // the cross toolchain's C and C++ libraries, which qemu loads
const found = (tool: string) => spawnSync(tool, ['--version']).status === 0;

test('aarch64 (cross-built, under qemu): neon and baseline give the reference loss and gradient, and the same bits', () => {
  const missing = ['cmake', `${CROSS}-gcc`, `${CROSS}-g++`, 'qemu-aarch64'].filter((tool) => !found(tool));
  if (missing.length > 0) return skip('aarch64', `not installed: ${missing.join(', ')} (Debian: crossbuild-essential-arm64 qemu-user)`);
  const build = mkdtempSync(join(tmpdir(), 'fdpo-aarch64-'));
  execFileSync('cmake', ['-S', root, '-B', build, '-DCMAKE_SYSTEM_NAME=Linux', '-DCMAKE_SYSTEM_PROCESSOR=aarch64', `-DCMAKE_C_COMPILER=${CROSS}-gcc`, `-DCMAKE_CXX_COMPILER=${CROSS}-g++`, '-DFDPO_BUILD_TESTS=ON', '-DFDPO_CUDA=OFF', '-DCMAKE_BUILD_TYPE=Release'], { stdio: 'pipe' });
  execFileSync('cmake', ['--build', build, '--target', 'check_loss', 'check_levels', '-j', '2'], { stdio: 'pipe' });
  const qemu = (program: string, args: string[], env: Record<string, string> = {}) =>
    execFileSync('qemu-aarch64', ['-L', SYSROOT, join(build, program), ...args], { env: { ...process.env, ...env }, maxBuffer: 1 << 28 }).toString();

  const levels = qemu('check_levels', []);
  assert.match(levels, /^levels: baseline neon$/m, levels);
  assert.match(levels, /every level gives the same bits/, levels);
  for (const level of ['neon', 'baseline']) {
    checkLossProgram(SEED, build, (file) => qemu('check_loss', [file], { FDPO_SIMD: level }), `aarch64 ${level}`);
  }
});

test.run();
