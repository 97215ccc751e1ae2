// The CPU-only fallback that installs use where nvcc, cmake or cmake-js is missing (binding.gyp,
// node-gyp): it must keep building and computing the right numbers, although `npm ci` and
// `npm run build` here build with cmake-js. It builds in a temporary copy of the sources (so
// build/ is left alone), then the doctor loads that binary and runs its self-check against the
// float64 reference.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { skip } from './helpers/skip.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tools = ['python3', 'make', 'c++'];
const missing = tools.filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);

test('the node-gyp fallback builds, loads and passes the self-check, CPU only', () => {
  if (missing.length > 0) return skip('node-gyp', `${missing.join(', ')} not found`);
  const temp = mkdtempSync(join(tmpdir(), 'fdpo-node-gyp-'));
  try {
    // binding.gyp reads the Node-API version from package.json.
    for (const file of ['binding.gyp', 'package.json']) cpSync(join(root, file), join(temp, file));
    cpSync(join(root, 'csrc'), join(temp, 'csrc'), { recursive: true });
    // binding.gyp asks node-addon-api for its target, resolved from the build folder.
    symlinkSync(join(root, 'node_modules'), join(temp, 'node_modules'));
    const nodeGyp = join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    // npm's environment (npm_config_nodedir) tells node-gyp where Node's headers are.
    const build = spawnSync(process.execPath, [nodeGyp, 'rebuild', `--jobs=${availableParallelism()}`], { cwd: temp, encoding: 'utf8' });
    assert.is(build.status, 0, `node-gyp rebuild failed:\n${build.stdout}${build.stderr}`);
    const binary = join(temp, 'build', 'Release', 'fused_dpo.node');
    assert.ok(existsSync(binary), `no ${binary}`);

    const doctor = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'lib', 'cli.ts'), 'doctor'], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, FUSED_DPO_NATIVE: binary, FUSED_DPO_BACKEND: '' },
    });
    const report = doctor.stdout + doctor.stderr;
    assert.is(doctor.status, 0, report);
    assert.ok(report.includes(`binary:   ${binary} (FUSED_DPO_NATIVE)`), report);
    assert.match(report, /^cuda: +not in this binary/m);
    assert.match(report, /^all good$/m);
    assert.not.match(report, /FAIL/);
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
});

test.run();
