/** Small seeded PRNG for tests: mulberry32 plus a Box–Muller normal sampler. */

export interface Rng {
  /** uniform in [0, 1) */
  next(): number;
  /** standard normal */
  normal(): number;
  /** uniform integer in [0, n) */
  int(n: number): number;
}

export function makeRng(seed: number): Rng {
  let state = seed >>> 0;
  const next = (): number => {
    // mulberry32: a Weyl sequence step, then an integer mix of the state
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  let spare: number | null = null;
  const normal = (): number => {
    if (spare !== null) {
      const z = spare;
      spare = null;
      return z;
    }
    const u1 = 1 - next(); // (0, 1], so the log is finite
    const u2 = next();
    const radius = Math.sqrt(-2 * Math.log(u1));
    spare = radius * Math.sin(2 * Math.PI * u2);
    return radius * Math.cos(2 * Math.PI * u2);
  };
  const int = (n: number): number => Math.floor(next() * n);
  return { next, normal, int };
}

let chosenSeed: number | undefined;

/** The run's seed: FDPO_SEED if set, else drawn from the clock; printed once as `seed=<n>`. */
export function testSeed(): number {
  if (chosenSeed === undefined) {
    const fromEnv = process.env.FDPO_SEED;
    if (fromEnv !== undefined && fromEnv.trim() !== '') {
      const parsed = Number(fromEnv);
      if (!Number.isInteger(parsed)) throw new Error(`FDPO_SEED must be an integer, got '${fromEnv}'`);
      chosenSeed = parsed >>> 0;
    } else {
      chosenSeed = (Date.now() ^ Math.floor(Math.random() * 4294967296)) >>> 0;
    }
    console.log(`seed=${chosenSeed}`);
  }
  return chosenSeed;
}
