// examples/tfjs-dpo.ts runs (through the package's own `fused-dpo/tfjs` export, so dist/ must be
// built) and learns: the loss falls from log 2, the policy moves towards the preferred tokens, and
// no tensor leaks across its steps. The README's tfjs snippets are that example's code.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const example = join(root, 'examples', 'tfjs-dpo.ts');

test('examples/tfjs-dpo.ts trains a tiny tfjs policy with DPO: exit 0, the loss falls, no tensor leaks', () => {
  assert.ok(existsSync(join(root, 'dist', 'tfjs.js')), 'dist/tfjs.js is missing: `npm run build:ts` builds it');
  const child = spawnSync(process.execPath, ['--import', 'tsx', example, '--steps', '30'], { cwd: root, encoding: 'utf8' });
  assert.is(child.status, 0, `the example exited with ${child.status}:\n${child.stdout}${child.stderr}`);
  const lines = child.stdout.trim().split('\n');
  assert.match(lines[0]!, /^step 10: loss \d\.\d{4}, reward accuracy/);
  const summary = JSON.parse(lines.at(-1)!) as Record<string, number>;
  assert.is(summary.steps, 30);
  assert.ok(Math.abs(summary.firstLoss! - Math.log(2)) < 1e-6, `the first loss is log 2 (policy = reference): ${summary.firstLoss}`);
  assert.ok(summary.finalLoss! < 0.5 * summary.firstLoss!, `the loss falls: ${summary.firstLoss} → ${summary.finalLoss}`);
  assert.ok(summary.lowAfter! > summary.lowBefore! + 0.05, `the policy prefers low tokens more: ${summary.lowBefore} → ${summary.lowAfter}`);
  assert.is(summary.tensorsAfter, summary.tensorsBefore, 'tensors after the last step');
});

test("the README's tfjs snippets are examples/tfjs-dpo.ts's code", () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = /^### tfjs\n([\s\S]*?)(?=^##)/m.exec(readme)?.[1];
  assert.ok(section, 'the README has a "### tfjs" subsection');
  const snippets = [...section.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
  assert.ok(snippets.length >= 2, `the tfjs subsection has its snippets (${snippets.length} found)`);
  const code = readFileSync(example, 'utf8');
  for (const snippet of snippets) assert.ok(code.includes(snippet), `this README snippet is not in examples/tfjs-dpo.ts:\n${snippet}`);
});

test.run();
