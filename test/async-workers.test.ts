// Async calls and worker threads: a worker terminated mid-call, and the kernels' thread pool
// when only workers load the addon. Each runs in a child process, so a crash fails the test
// instead of the runner.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const helper = (name: string) => fileURLToPath(new URL(`./helpers/${name}`, import.meta.url));

function runChild(name: string, ...args: string[]): string {
  return execFileSync(process.execPath, ['--import', 'tsx', helper(name), ...args], { encoding: 'utf8', timeout: 240_000 }).trim();
}

test('terminating a worker while its dpoLossAsync runs leaves the process alive', () => {
  assert.is(runChild('terminate-workers.ts', '30'), 'survived 30');
});

test('50 workers in a row, each calling dpoLossAsync: one kernel thread pool, the thread count stays flat', () => {
  const counts = JSON.parse(runChild('count-threads.ts', '50')) as number[];
  assert.is(counts.length, 50);
  // The first worker starts the pool (3 helpers for threads: 4); later ones must reuse it.
  const growth = Math.max(...counts.slice(1)) - counts[0]!;
  assert.ok(growth <= 2, `threads after each worker: ${counts.join(' ')}`);
});

test.run();
