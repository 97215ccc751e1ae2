// npm's install step for fused-dpo. Plain JavaScript: it runs before TypeScript is compiled.
// A prebuilt binary that loads here needs nothing more. Otherwise build from source: with
// cmake-js, CUDA included, where nvcc, cmake and cmake-js are all found, else CPU-only with
// node-gyp. It prints one line saying which and why.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const platformTag = `${process.platform}-${process.arch}`;
const say = (line) => console.log(`fused-dpo: ${line}`);

function onPath(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

// A package's file, resolved from this package (a dev dependency in a checkout, a user's own
// install otherwise); null when it is not installed.
function resolveFromPackage(request) {
  try {
    return createRequire(join(packageRoot, 'package.json')).resolve(request);
  } catch {
    return null;
  }
}

// The first line of the child's error that says why the binary does not load.
function loadError(file) {
  const child = spawnSync(process.execPath, ['-e', 'require(process.argv[1])', file], { encoding: 'utf8' });
  if (child.status === 0) return null;
  const lines = child.stderr.split('\n');
  return lines.find((line) => /^\w*Error\b/.test(line)) ?? lines.find((line) => line.trim()) ?? `exit code ${child.status}`;
}

function run(script, args, env = process.env) {
  return spawnSync(process.execPath, [script, ...args], { cwd: packageRoot, stdio: 'inherit', env }).status ?? 1; // null: killed
}

function buildWithNodeGyp() {
  // In a checkout node-gyp is a dev dependency; npm bundles its own for installed packages.
  const nodeGyp = resolveFromPackage('node-gyp/bin/node-gyp.js') ?? process.env.npm_config_node_gyp;
  if (!nodeGyp) {
    say('cannot build: node-gyp was not found (run this through npm: `npm rebuild fused-dpo`)');
    return 1;
  }
  const status = run(nodeGyp, ['rebuild']);
  if (status !== 0) say(`node-gyp failed (exit code ${status}): a source build needs python3, make and a C++17 compiler`);
  return status;
}

function main() {
  const explicit = process.env.FUSED_DPO_NATIVE;
  if (explicit) {
    say(`FUSED_DPO_NATIVE is set (${explicit}): nothing to build`);
    return 0;
  }

  const prebuildDir = join(packageRoot, 'prebuilds', platformTag);
  const prebuilds = existsSync(prebuildDir) ? readdirSync(prebuildDir).filter((name) => name.endsWith('.node')).sort() : [];
  let why = `no prebuilt binary for ${platformTag}`;
  for (const name of prebuilds) {
    const file = join(prebuildDir, name);
    const error = loadError(file);
    if (error === null) {
      say(`using the prebuilt binary ${relative(packageRoot, file)}`);
      return 0;
    }
    why = `the prebuilt binary ${relative(packageRoot, file)} does not load here (${error})`;
  }

  const nvcc = onPath('nvcc') ?? (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : null);
  const cmake = onPath('cmake');
  const cmakeJs = resolveFromPackage('cmake-js/bin/cmake-js');
  if (!nvcc || !cmake || !cmakeJs) {
    const missing = !nvcc
      ? 'no nvcc on PATH or at /usr/local/cuda/bin/nvcc'
      : !cmake
        ? `nvcc found at ${nvcc}, but no cmake on PATH`
        : `nvcc found at ${nvcc}, but cmake-js is not installed: \`npm install cmake-js && npm rebuild fused-dpo\` builds with CUDA`;
    say(`${why}; building from source with node-gyp, CPU only (${missing})`);
    return buildWithNodeGyp();
  }
  say(`${why}; building from source with cmake-js (CUDA: nvcc found at ${nvcc})`);
  // CMake's CUDA check does not look in /usr/local/cuda/bin: tell it where nvcc is.
  const status = run(cmakeJs, ['rebuild'], { ...process.env, CUDACXX: process.env.CUDACXX || nvcc });
  if (status === 0) return 0;
  say(`the cmake-js build failed (exit code ${status}); building with node-gyp instead, CPU only`);
  return buildWithNodeGyp();
}

process.exitCode = main();
