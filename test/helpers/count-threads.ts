// Child process for test/async-workers.test.ts: only worker threads load the addon. Runs `rounds`
// workers one after another, each making one dpoLossAsync call with 4 kernel threads, and
// prints the process's thread count (/proc/self/task) after each worker has exited, as JSON.
import { readdirSync } from 'node:fs';

import { tsWorker } from './ts-worker.js';

const rounds = Number(process.argv[2] ?? 50);
const body = new URL('./loss-worker.ts', import.meta.url);
const counts: number[] = [];
for (let i = 0; i < rounds; i++) {
  const worker = tsWorker(body, { workerData: { rows: 64, vocab: 4096, calls: 1, threads: 4 } });
  await new Promise<void>((exited, failed) => {
    worker.on('error', failed);
    worker.on('exit', (code) => (code === 0 ? exited() : failed(new Error(`worker ${i} exited with ${code}`))));
  });
  counts.push(readdirSync('/proc/self/task').length);
}
console.log(JSON.stringify(counts));
