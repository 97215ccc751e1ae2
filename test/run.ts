// `npm test`: runs every test/*.test.ts (or those FDPO_TEST_PATTERN matches) through uvu and ends
// with the plain line "N passed, N failed" that CI reads. A file that fails to import counts as a
// failure.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const uvu = join(dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', 'uvu', 'bin.js');
const pattern = process.env.FDPO_TEST_PATTERN || '\\.test\\.ts$';
const args = ['--import', 'tsx', uvu, 'test', pattern, '--no-color', ...process.argv.slice(2)];
const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });

let output = '';
child.stdout.on('data', (chunk: Buffer) => {
  process.stdout.write(chunk);
  output += chunk.toString();
});
child.on('close', (code) => {
  const total = Number(/Total:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const passed = Number(/Passed:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const skipped = Number(/Skipped:\s+(\d+)/.exec(output)?.[1] ?? 0);
  let failed = total - passed - skipped;
  if (code !== 0 && failed === 0) failed = 1; // crashed before its summary
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exit(code === 0 && failed === 0 ? 0 : 1);
});
