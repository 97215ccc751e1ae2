// npm's install step for fused-dpo, and the build a contributor runs (`npm run build`). Plain
// JavaScript: it runs before TypeScript is compiled.
//   node scripts/install.mjs                as `npm install`: a prebuilt binary that loads here
//                                           needs nothing more; otherwise build from source
//   node scripts/install.mjs --from-source  always build from source, into build/Release
// A source build uses cmake-js, CUDA included, where nvcc, cmake and cmake-js are all found, else
// node-gyp, CPU only. It prints one line saying which and why. FDPO_PTXAS_REPORT=1 in the
// environment prints the CUDA compiler's register and spill report (CMakeLists.txt).
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

// Why the install step builds from source, or null when a prebuilt binary loads (nothing to build).
function whyBuild() {
  const prebuildDir = join(packageRoot, 'prebuilds', platformTag);
  const prebuilds = existsSync(prebuildDir) ? readdirSync(prebuildDir).filter((name) => name.endsWith('.node')).sort() : [];
  let why = `no prebuilt binary for ${platformTag}`;
  for (const name of prebuilds) {
    const file = join(prebuildDir, name);
    const error = loadError(file);
    if (error === null) {
      say(`using the prebuilt binary ${relative(packageRoot, file)}`);
      return null;
    }
    why = `the prebuilt binary ${relative(packageRoot, file)} does not load here (${error})`;
  }
  return why;
}

// The CMake options of the binary a user gets (CMakeLists.txt's defaults), passed explicitly.
const RELEASE_OPTIONS = ['--CDFDPO_CUDA=ON', '--CDFDPO_CUDA_EMULATION=OFF', '--CDFDPO_SANITIZE=OFF'];

function buildFromSource(why) {
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
  const env = { ...process.env, CUDACXX: process.env.CUDACXX || nvcc };
  // Incremental: configure with this build's options stated (a cache left by a CPU-only,
  // emulated or sanitizer build of build/ must not carry over), then rebuild what changed.
  let status = run(cmakeJs, ['configure', ...RELEASE_OPTIONS], env);
  if (status === 0) status = run(cmakeJs, ['build'], env);
  if (status === 0) return 0;
  say(`the cmake-js build failed (exit code ${status}); building with node-gyp instead, CPU only`);
  return buildWithNodeGyp();
}

function main(args) {
  const unknown = args.filter((arg) => arg !== '--from-source');
  if (unknown.length > 0) {
    say(`unknown argument ${unknown[0]} (the only one is --from-source)`);
    return 2;
  }
  const explicit = process.env.FUSED_DPO_NATIVE;
  if (args.includes('--from-source')) {
    // The loader still takes FUSED_DPO_NATIVE first: say so, since the new build would be ignored.
    const note = explicit ? ` (FUSED_DPO_NATIVE=${explicit} is set: the loader uses that file, not this build)` : '';
    return buildFromSource(`a source build was asked for (--from-source)${note}`);
  }
  if (explicit) {
    say(`FUSED_DPO_NATIVE is set (${explicit}): nothing to build`);
    return 0;
  }
  const why = whyBuild();
  return why === null ? 0 : buildFromSource(why);
}

process.exitCode = main(process.argv.slice(2));
