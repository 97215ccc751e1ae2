// `npm test`: runs every test/*.test.ts (or those FDPO_TEST_PATTERN matches) through uvu and ends
// with the plain line "N passed, N failed, N skipped" that CI reads. A file that fails to import
// counts as a failure. A test that calls skip() (test/helpers/skip.ts) counts as skipped, with its
// reason listed; FDPO_ALLOWED_SKIPS (comma-separated skip ids) says which skips are expected, and
// any other counts as a failure too. Unset, every skip is allowed, except under CI (CI=...), where
// none is.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

import { SKIP_MARKER } from './helpers/skip.js';

const uvu = join(dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', 'uvu', 'bin.js');
const pattern = process.env.FDPO_TEST_PATTERN || '\\.test\\.ts$';
const args = ['--import', 'tsx', uvu, 'test', pattern, '--no-color', ...process.argv.slice(2)];
const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });

const allowList = process.env.FDPO_ALLOWED_SKIPS ?? (process.env.CI ? '' : null);
const allowed = allowList === null ? null : new Set(allowList.split(',').map((id) => id.trim()).filter(Boolean));

let output = '';
child.stdout.on('data', (chunk: Buffer) => {
  process.stdout.write(chunk);
  output += chunk.toString();
});
child.on('close', (code) => {
  const total = Number(/Total:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const uvuPassed = Number(/Passed:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const uvuSkipped = Number(/Skipped:\s+(\d+)/.exec(output)?.[1] ?? 0); // test.skip(): counted by uvu itself
  const markers = [...output.matchAll(new RegExp(`${SKIP_MARKER} (\\{.*\\})$`, 'gm'))].map((m) => JSON.parse(m[1]!) as { id: string; reason: string });
  const unexpected = allowed === null ? [] : markers.filter((s) => !allowed.has(s.id));
  for (const s of markers) console.log(`skipped (${unexpected.includes(s) ? 'NOT ALLOWED' : 'allowed'}): ${s.id}: ${s.reason}`);
  if (unexpected.length > 0) console.log(`FDPO_ALLOWED_SKIPS=${JSON.stringify(allowList)} does not allow: ${unexpected.map((s) => s.id).join(', ')}`);
  const skipped = uvuSkipped + markers.length - unexpected.length; // an unexpected skip is a failure
  const passed = uvuPassed - markers.length;
  let failed = total - uvuPassed - uvuSkipped + unexpected.length;
  if (code !== 0 && failed === 0) failed = 1; // crashed before its summary
  console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
  process.exit(code === 0 && failed === 0 ? 0 : 1);
});
