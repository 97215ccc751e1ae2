// A test that cannot run on this machine says so with skip(id, reason) and returns: test/run.ts
// reads the marker line, counts the test as skipped rather than passed, and fails the run when
// the skip is not one FDPO_ALLOWED_SKIPS allows (see test/run.ts).
export const SKIP_MARKER = '##fdpo-skip';

/** id: a short stable name for the allow-list (e.g. 'device'); reason: why the test cannot run here. */
export function skip(id: string, reason: string): void {
  console.log(`${SKIP_MARKER} ${JSON.stringify({ id, reason })}`);
}
