// The loader (lib/native.ts): which binary wins and why, and the refusal of a binary built for
// another C ABI version, with the next place tried after it.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { ABI_VERSION } from '../lib/binding.js';
import { loadFirst, nativeCandidates, nativePath, type NativeLoadError } from '../lib/native.js';

const platformTag = `${process.platform}-${process.arch}`;
const real = nativePath();

/** A package folder with copies of the real binary as prebuilds/ and build/Release, modified at the given times (s). */
function fakePackage(prebuildTime: number, localTime: number): { root: string; prebuild: string; local: string } {
  const root = mkdtempSync(join(tmpdir(), 'fdpo-loader-'));
  const prebuild = join(root, 'prebuilds', platformTag, 'fused-dpo.node');
  const local = join(root, 'build', 'Release', 'fused_dpo.node');
  for (const [file, time] of [[prebuild, prebuildTime], [local, localTime]] as const) {
    mkdirSync(dirname(file), { recursive: true });
    copyFileSync(real, file);
    utimesSync(file, time, time);
  }
  return { root, prebuild, local };
}

test('a local build newer than prebuilds/ is tried first, and the order says why', () => {
  const { root, prebuild, local } = fakePackage(1_700_000_000, 1_800_000_000);
  try {
    const { candidates, order } = nativeCandidates(root, null);
    assert.equal(candidates.map((c) => c.path), [local, prebuild]);
    assert.match(order, /^the local build build\/Release\/fused_dpo\.node first: it is newer than prebuilds\//);
    const loaded = loadFirst(candidates);
    assert.is(loaded.from.source, 'local build');
    assert.is(loaded.from.path, local);
    assert.is(loaded.from.abiVersion, ABI_VERSION);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a prebuild as new as the local build or newer stays first', () => {
  for (const [prebuildTime, localTime] of [[1_800_000_000, 1_700_000_000], [1_800_000_000, 1_800_000_000]]) {
    const { root, prebuild, local } = fakePackage(prebuildTime!, localTime!);
    try {
      const { candidates, order } = nativeCandidates(root, null);
      assert.equal(candidates.map((c) => c.path), [prebuild, local]);
      assert.match(order, /^prebuilt binaries first: the local build build\/Release\/fused_dpo\.node is not newer/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
});

test('FUSED_DPO_NATIVE alone is tried; a missing file says so', () => {
  const { candidates, order } = nativeCandidates('/nowhere', '/nonexistent/fused_dpo.node');
  assert.equal(candidates.map((c) => [c.source, c.path]), [['FUSED_DPO_NATIVE', '/nonexistent/fused_dpo.node']]);
  assert.is(order, 'FUSED_DPO_NATIVE is set: that file only');
  try {
    loadFirst(candidates);
    assert.unreachable('loaded a file that does not exist');
  } catch (error) {
    const e = error as NativeLoadError;
    assert.is(e.code, 'ERR_FDPO_NATIVE_NOT_FOUND');
    assert.equal(e.attempts.map((a) => a.error), ['no such file']);
    assert.match(e.message, /FUSED_DPO_NATIVE: \/nonexistent\/fused_dpo\.node: no such file/);
  }
});

test('a binary whose C ABI version differs is refused: which file, its version, the expected one, how to rebuild', () => {
  // The real binary reports ABI_VERSION; expecting another stands for a stale build.
  const expected = ABI_VERSION + 1;
  try {
    loadFirst([{ source: 'local build', path: real, error: null }], expected);
    assert.unreachable('loaded a binary of another ABI version');
  } catch (error) {
    const e = error as NativeLoadError;
    assert.is(e.code, 'ERR_FDPO_NATIVE_ABI_MISMATCH');
    assert.is(e.attempts[0]!.abiVersion, ABI_VERSION);
    assert.ok(e.message.includes(`local build: ${real}: C ABI version ${ABI_VERSION}, but this fused-dpo expects ${expected} (a stale build)`), e.message);
    assert.match(e.message, /`npm run build` in a checkout, `npm rebuild fused-dpo`/);
  }
});

// A minimal N-API addon whose info() reports C ABI version 0: a binary from an older fused-dpo.
const STALE_ADDON = `#include <node_api.h>
static napi_value info(napi_env env, napi_callback_info call) {
  napi_value result, version;
  napi_create_object(env, &result);
  napi_create_int32(env, 0, &version);
  napi_set_named_property(env, result, "abiVersion", version);
  return result;
}
NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "info", NAPI_AUTO_LENGTH, info, NULL, &fn);
  napi_set_named_property(env, exports, "info", fn);
  return exports;
}
`;

test('a stale binary is skipped and the next place loads', () => {
  if (spawnSync('sh', ['-c', 'command -v cc']).status !== 0) {
    assert.ok(!process.env.CI, 'CI has a C compiler');
    console.log('  (skipped: no cc to build a stale addon with)');
    return;
  }
  const temp = mkdtempSync(join(tmpdir(), 'fdpo-loader-'));
  try {
    const headers = join(dirname(createRequire(import.meta.url).resolve('node-api-headers/package.json')), 'include');
    writeFileSync(join(temp, 'stale.c'), STALE_ADDON);
    const stale = join(temp, 'stale.node');
    const cc = spawnSync('cc', ['-shared', '-fPIC', `-I${headers}`, '-o', stale, join(temp, 'stale.c')], { encoding: 'utf8' });
    assert.is(cc.status, 0, cc.stderr);
    const loaded = loadFirst([
      { source: 'prebuild', path: stale, error: null },
      { source: 'local build', path: real, error: null },
    ]);
    assert.is(loaded.from.path, real);
    assert.is(loaded.attempts[0]!.abiVersion, 0);
    assert.is(loaded.attempts[0]!.error, `C ABI version 0, but this fused-dpo expects ${ABI_VERSION} (a stale build)`);
    try {
      loadFirst([{ source: 'FUSED_DPO_NATIVE', path: stale, error: null }]);
      assert.unreachable('loaded the stale binary');
    } catch (error) {
      const e = error as NativeLoadError;
      assert.is(e.code, 'ERR_FDPO_NATIVE_ABI_MISMATCH');
      assert.match(e.message, /FUSED_DPO_NATIVE is set, so nothing else was tried/);
    }
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
});

test.run();
