// Loads the native addon: the file FUSED_DPO_NATIVE names, else a prebuilt binary for this
// platform, else a local build.
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

import type { NativeAddon } from './binding.js';
import type { FusedDpoError } from './errors.js';

export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Where a binary came from, in the order they are tried (FUSED_DPO_NATIVE alone when it is set). */
export type NativeSource = 'FUSED_DPO_NATIVE' | 'prebuild' | 'local build';

/** One place the loader tried: the file (or folder) and why it did not load; `error` is null for the one that loaded. */
export interface NativeLoadAttempt {
  source: NativeSource;
  path: string;
  error: string | null;
}

/** Thrown when no binary loads; `attempts` lists every place tried, as the message does. */
export interface NativeLoadError extends FusedDpoError {
  code: 'ERR_FDPO_NATIVE_NOT_FOUND';
  attempts: NativeLoadAttempt[];
}

const platformTag = `${process.platform}-${process.arch}`;
let loaded: { addon: NativeAddon; from: NativeLoadAttempt } | undefined;
let lastAttempts: NativeLoadAttempt[] = [];

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
  try {
    load();
  } catch {
    // The failed attempts are what the caller asked for.
  }
  return lastAttempts;
}

function load(): { addon: NativeAddon; from: NativeLoadAttempt } {
  if (loaded) return loaded;
  const explicit = process.env.FUSED_DPO_NATIVE || null; // set but empty counts as unset
  // An explicit path is the user's choice: if it fails, say so rather than load something else.
  const candidates: NativeLoadAttempt[] = explicit
    ? [{ source: 'FUSED_DPO_NATIVE', path: resolve(explicit), error: null }]
    : [...prebuildCandidates(), { source: 'local build', path: join(packageRoot, 'build', 'Release', 'fused_dpo.node'), error: null }];
  const attempts: NativeLoadAttempt[] = [];
  lastAttempts = attempts;
  for (const attempt of candidates) {
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
      loaded = { addon: addonModule.exports as NativeAddon, from: attempt };
      return loaded;
    } catch (error) {
      const message = (error as Error).message;
      attempt.error = message.startsWith(`${attempt.path}: `) ? message.slice(attempt.path.length + 2) : message;
    }
  }
  throw loadError(attempts, explicit !== null);
}

/** The .node files in prebuilds/<platform>-<arch>/, or one failed attempt saying why there are none. */
function prebuildCandidates(): NativeLoadAttempt[] {
  const dir = join(packageRoot, 'prebuilds', platformTag);
  if (!existsSync(dir)) return [{ source: 'prebuild', path: dir, error: `no such folder (no prebuilt binary for ${platformTag} in this package)` }];
  const files = readdirSync(dir).filter((name) => name.endsWith('.node')).sort();
  if (files.length === 0) return [{ source: 'prebuild', path: dir, error: 'no .node file in this folder' }];
  return files.map((name) => ({ source: 'prebuild', path: join(dir, name), error: null }));
}

function loadError(attempts: NativeLoadAttempt[], explicit: boolean): NativeLoadError {
  const lines = [
    `fused-dpo: no native addon loads for ${platformTag} (Node ${process.version}). Tried, in order:`,
    ...attempts.map((a) => `  ${a.source}: ${a.path}: ${a.error}`),
    explicit
      ? 'FUSED_DPO_NATIVE is set, so nothing else was tried: fix the path, or unset it to load the prebuilt or locally built binary.'
      : 'Build it from source with `npm rebuild fused-dpo` (in a checkout: `npm run build:native`, or `npm run build:cmake`), ' +
        'or set FUSED_DPO_NATIVE to the path of a fused-dpo .node file.',
    'Run `npx fused-dpo doctor` to see what is installed.',
  ];
  const error = new Error(lines.join('\n')) as NativeLoadError;
  error.code = 'ERR_FDPO_NATIVE_NOT_FOUND';
  error.attempts = attempts;
  return error;
}
