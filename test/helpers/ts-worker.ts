// A worker thread that runs a TypeScript file. In Node 20 the tsx loader of `node --import tsx`
// does not follow a worker, so the worker registers it before importing the file.
import { Worker, type WorkerOptions } from 'node:worker_threads';

const tsxApi = import.meta.resolve('tsx/esm/api');

export function tsWorker(file: URL, options: Omit<WorkerOptions, 'eval'> = {}): Worker {
  const source = `import(${JSON.stringify(tsxApi)}).then(({ register }) => { register(); return import(${JSON.stringify(file.href)}); });`;
  return new Worker(source, { ...options, eval: true });
}
