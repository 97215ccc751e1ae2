// Loads the native addon: the file FUSED_DPO_NATIVE names, else the newer of a prebuilt binary
// for this platform and a local build (prebuilt first on a tie), refusing any whose C ABI version
// is not the one lib/binding.ts was written for.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative, resolve } from 'node:path';

import { ABI_VERSION, type NativeAddon } from './binding.js';
import type { FusedDpoError } from './errors.js';

export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Where a binary came from (FUSED_DPO_NATIVE alone when it is set). */
export type NativeSource = 'FUSED_DPO_NATIVE' | 'prebuild' | 'local build';

/** One place the loader tried: the file (or folder) and why it did not load; `error` is null for the one that loaded. */
export interface NativeLoadAttempt {
  source: NativeSource;
  path: string;
  error: string | null;
  /** The C ABI version the file reported, when it loaded far enough to say (also when it was refused for it). */
  abiVersion?: number;
}

/** Thrown when no binary loads; `attempts` lists every place tried, as the message does. */
export interface NativeLoadError extends FusedDpoError {
  /** ERR_FDPO_NATIVE_ABI_MISMATCH when a binary was found but built for another C ABI version. */
  code: 'ERR_FDPO_NATIVE_NOT_FOUND' | 'ERR_FDPO_NATIVE_ABI_MISMATCH';
  attempts: NativeLoadAttempt[];
}

/** The places to try, in order, and one sentence saying why in that order. */
export interface NativeCandidates {
  candidates: NativeLoadAttempt[];
  order: string;
}

const platformTag = `${process.platform}-${process.arch}`;
let loaded: { addon: NativeAddon; from: NativeLoadAttempt } | undefined;
let lastAttempts: NativeLoadAttempt[] = [];
let lastOrder = '';

/** The addon, loaded on first use; throws a NativeLoadError when nothing loads (and tries again on the next call). */
export function native(): NativeAddon {
  return load().addon;
}

/** The file the addon was loaded from. */
export function nativePath(): string {
  return load().from.path;
}

/** Where the loaded addon came from. */
export function nativeSource(): NativeSource {
  return load().from.source;
}

/** Every place the latest load tried, in order, with why each failed; loads first if nothing has tried yet. Never throws. */
export function nativeLoadAttempts(): readonly NativeLoadAttempt[] {
  tryLoad();
  return lastAttempts;
}

/** Why the latest load tried the places in that order (which binary wins, and why). Never throws. */
export function nativeLoadOrder(): string {
  tryLoad();
  return lastOrder;
}

function tryLoad(): void {
  try {
    load();
  } catch {
    // The failed attempts are what the caller asked for.
  }
}

function load(): { addon: NativeAddon; from: NativeLoadAttempt } {
  if (loaded) return loaded;
  const { candidates, order } = nativeCandidates();
  lastOrder = order;
  let result: ReturnType<typeof loadFirst>;
  try {
    result = loadFirst(candidates);
  } catch (error) {
    lastAttempts = (error as NativeLoadError).attempts;
    throw error;
  }
  lastAttempts = result.attempts;
  const refused = result.attempts.filter((a) => a.abiVersion !== undefined && a.error !== null);
  if (refused.length > 0) {
    const list = refused.map((a) => `${a.path} (C ABI ${a.abiVersion})`).join(', ');
    process.emitWarning(`fused-dpo: skipped ${list}, built for another C ABI version than ${ABI_VERSION}; loaded ${result.from.path}. ${REBUILD}`, {
      code: 'FDPO_NATIVE_ABI_MISMATCH',
    });
  }
  loaded = result;
  return loaded;
}

const REBUILD = 'Rebuild: `npm run build` in a checkout, `npm rebuild fused-dpo` in a project that installed it.';

/**
 * The places to load from: FUSED_DPO_NATIVE alone when it is set (the user's choice: if it fails,
 * say so rather than load something else); else the prebuilt binaries and the local build, the
 * newer first, so that a fresh build in a checkout wins over a stale prebuilds/.
 */
export function nativeCandidates(root: string = packageRoot, explicit: string | null = process.env.FUSED_DPO_NATIVE || null): NativeCandidates {
  if (explicit !== null) {
    return { candidates: [{ source: 'FUSED_DPO_NATIVE', path: resolve(explicit), error: null }], order: 'FUSED_DPO_NATIVE is set: that file only' };
  }
  const prebuilds = prebuildCandidates(root);
  const local: NativeLoadAttempt = { source: 'local build', path: join(root, 'build', 'Release', 'fused_dpo.node'), error: null };
  const localTime = modified(local.path);
  const prebuildTimes = prebuilds.filter((p) => p.error === null).map((p) => modified(p.path) ?? -Infinity);
  const newestPrebuild = prebuildTimes.length > 0 ? Math.max(...prebuildTimes) : null;
  const name = (a: NativeLoadAttempt) => relative(root, a.path);
  if (localTime === null) return { candidates: [...prebuilds, local], order: 'prebuilt binaries, then the local build (there is none)' };
  if (newestPrebuild === null) return { candidates: [...prebuilds, local], order: 'the local build (no prebuilt binary for this platform)' };
  const when = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
  const times = `built ${when(localTime)}, prebuilt ${when(newestPrebuild)}`;
  if (localTime > newestPrebuild) {
    return { candidates: [local, ...prebuilds], order: `the local build ${name(local)} first: it is newer than prebuilds/${platformTag}/ (${times})` };
  }
  return { candidates: [...prebuilds, local], order: `prebuilt binaries first: the local build ${name(local)} is not newer (${times})` };
}

function modified(path: string): number | null {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return null;
  }
}

/** The .node files in prebuilds/<platform>-<arch>/, or one failed attempt saying why there are none. */
function prebuildCandidates(root: string): NativeLoadAttempt[] {
  const dir = join(root, 'prebuilds', platformTag);
  if (!existsSync(dir)) return [{ source: 'prebuild', path: dir, error: `no such folder (no prebuilt binary for ${platformTag} in this package)` }];
  const files = readdirSync(dir).filter((name) => name.endsWith('.node')).sort();
  if (files.length === 0) return [{ source: 'prebuild', path: dir, error: 'no .node file in this folder' }];
  return files.map((name) => ({ source: 'prebuild', path: join(dir, name), error: null }));
}

/**
 * Load the first candidate that loads and reports `expectedAbi` (the parameter lets tests stand
 * for a stale binary); fills in each attempt's error. Throws a NativeLoadError when none does.
 */
export function loadFirst(candidates: readonly NativeLoadAttempt[], expectedAbi: number = ABI_VERSION): { addon: NativeAddon; from: NativeLoadAttempt; attempts: NativeLoadAttempt[] } {
  const attempts: NativeLoadAttempt[] = [];
  for (const candidate of candidates) {
    const attempt = { ...candidate };
    attempts.push(attempt);
    if (attempt.error !== null) continue; // known not to load: no prebuild folder
    if (!existsSync(attempt.path)) {
      attempt.error = 'no such file';
      continue;
    }
    // dlopen whatever the file is called: require() would read a FUSED_DPO_NATIVE=x.json as JSON.
    const addonModule = { exports: {} };
    try {
      process.dlopen(addonModule, attempt.path);
    } catch (error) {
      const message = (error as Error).message;
      attempt.error = message.startsWith(`${attempt.path}: `) ? message.slice(attempt.path.length + 2) : message;
      continue;
    }
    const addon = addonModule.exports as NativeAddon;
    const abiVersion = typeof addon.info === 'function' ? addon.info().abiVersion : undefined;
    if (abiVersion !== expectedAbi) {
      if (typeof abiVersion === 'number') attempt.abiVersion = abiVersion;
      attempt.error =
        typeof abiVersion === 'number'
          ? `C ABI version ${abiVersion}, but this fused-dpo expects ${expectedAbi} (a stale build)`
          : `reports no C ABI version (not a fused-dpo addon, or one older than this package); this fused-dpo expects ${expectedAbi}`;
      continue;
    }
    attempt.abiVersion = abiVersion;
    return { addon, from: attempt, attempts };
  }
  throw loadError(attempts, candidates[0]?.source === 'FUSED_DPO_NATIVE', expectedAbi);
}

function loadError(attempts: NativeLoadAttempt[], explicit: boolean, expectedAbi: number): NativeLoadError {
  const mismatch = attempts.some((a) => a.abiVersion !== undefined);
  const lines = [
    mismatch
      ? `fused-dpo: no native addon with C ABI version ${expectedAbi} loads for ${platformTag} (Node ${process.version}). Tried, in order:`
      : `fused-dpo: no native addon loads for ${platformTag} (Node ${process.version}). Tried, in order:`,
    ...attempts.map((a) => `  ${a.source}: ${a.path}: ${a.error}`),
    ...(explicit ? ['FUSED_DPO_NATIVE is set, so nothing else was tried: fix the path, or unset it to load the prebuilt or locally built binary.'] : []),
    mismatch
      ? REBUILD
      : 'Build it from source with `npm rebuild fused-dpo` (in a checkout: `npm run build`), or set FUSED_DPO_NATIVE to the path of a fused-dpo .node file.',
    'Run `npx fused-dpo doctor` to see what is installed.',
  ];
  const error = new Error(lines.join('\n')) as NativeLoadError;
  error.code = mismatch ? 'ERR_FDPO_NATIVE_ABI_MISMATCH' : 'ERR_FDPO_NATIVE_NOT_FOUND';
  error.attempts = attempts;
  return error;
}
