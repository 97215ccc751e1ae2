// Child process for test/async-workers.test.ts: starts workers that run large dpoLossAsync calls
// and terminates each one at a different moment (while loading the addon, while a call runs, as
// it completes). Prints "survived N" and exits 0 unless the process dies.
import { tsWorker } from './ts-worker.js';

const rounds = Number(process.argv[2] ?? 30);
const body = new URL('./loss-worker.ts', import.meta.url);
for (let i = 0; i < rounds; i++) {
  const worker = tsWorker(body, { workerData: { rows: 256, vocab: 16384, calls: Infinity, threads: 2 } });
  worker.on('error', (error) => {
    console.error(error);
    process.exit(1);
  });
  await new Promise((started) => worker.once('message', started));
  await new Promise((wait) => setTimeout(wait, (i * 7) % 40));
  await worker.terminate();
}
console.log(`survived ${rounds}`);
