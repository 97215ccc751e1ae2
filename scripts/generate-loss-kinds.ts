// Writes csrc/core/fused_dpo_kinds.h from lib/loss-kinds.ts, the one table of loss kinds:
// `npm run generate` after changing the table. With --check it writes nothing and exits 1 when
// the header is not what the table gives (test/loss-kinds.test.ts runs the same comparison).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { kindsHeader } from './loss-kinds-header.js';

const path = fileURLToPath(new URL('../csrc/core/fused_dpo_kinds.h', import.meta.url));
const text = kindsHeader();
if (process.argv.includes('--check')) {
  const current = readFileSync(path, 'utf8');
  if (current !== text) {
    console.error(`${path} is stale: run \`npm run generate\``);
    process.exit(1);
  }
} else {
  writeFileSync(path, text);
  console.log(`wrote ${path}`);
}
