// Checks every peer against fused-dpo on random cases, and times them at a real size.
//
//   node --import tsx bench/peers/check.ts                 small cases (B=1 T=4 V=17, ...)
//   node --import tsx bench/peers/check.ts --big [--big-runs N]
//                                                          also B=4 T=256 V=32000 (N runs, default
//                                                          3), each peer in its own child process
//   node --import tsx bench/peers/check.ts --size 4,256,32000 [--peer NAME] [--runs N]
//
// Pass: relative loss error < 1e-4 and relative L2 gradient error < 1e-3.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { dpoLoss, sequenceLogps } from '../../lib/index.js';
import { PEERS } from './index.js';
import type { Peer, PeerInputs } from './types.js';

const LOSS_TOL = 1e-4;
const GRAD_TOL = 1e-3;

/** Two mixed 32-bit xorshifts → uniform [0, 1); deterministic per seed, fast enough for 65M draws. */
function rng(seed: number) {
  let a = Math.imul(seed, 0x9e3779b1) | 1;
  let b = (Math.imul(seed, 0x85ebca6b) ^ 0x6a09e667) | 1;
  return () => {
    a ^= a << 13; a ^= a >>> 17; a ^= a << 5;
    b ^= b << 17; b ^= b >>> 15; b ^= b << 26;
    return ((a >>> 0) * 2 ** -32 + (b >>> 0) * 2 ** -64) % 1;
  };
}

/** Random logits ≈ N(0, 3²); every sequence starts with ≥ 1 ignored (prompt) row and may end in
 * padding; with `emptyLast` the last rejected sequence is all ignored (π = 0). */
function makeCase(B: number, T: number, V: number, seed: number, emptyLast = false): PeerInputs {
  const u = rng(seed);
  const n = 2 * B * T * V;
  const logits = new Float32Array(n);
  for (let i = 0; i < n; i++) logits[i] = (u() + u() + u() - 1.5) * 6; // ≈ N(0, 3²)
  const labels = new Int32Array(2 * B * T);
  for (let s = 0; s < 2 * B; s++) {
    const prompt = Math.min(T - 1, 1 + Math.floor((u() * T) / 4)); // leading prompt, ≥ 1 row
    const pad = Math.floor((u() * T) / 8); // trailing padding
    const empty = emptyLast && s === 2 * B - 1;
    for (let t = 0; t < T; t++) {
      labels[s * T + t] = empty || t < prompt || t >= T - pad ? -100 : Math.floor(u() * V);
    }
  }
  // Reference sums near the policy's own, so β·Δ lands where σ is not saturated.
  const { logps } = sequenceLogps({ logits: { data: logits, shape: [2 * B, T, V] }, labels: { data: labels, shape: [2 * B, T] } });
  const refChosen = new Float64Array(B);
  const refRejected = new Float64Array(B);
  for (let i = 0; i < B; i++) {
    refChosen[i] = logps[i] + (u() - 0.5) * 20;
    refRejected[i] = logps[B + i] + (u() - 0.5) * 20;
  }
  return { B, T, V, logits, labels, refChosen, refRejected, beta: 0.1 };
}

function expected(x: PeerInputs) {
  const out = dpoLoss({
    logits: { data: x.logits, shape: [2 * x.B, x.T, x.V] },
    labels: { data: x.labels, shape: [2 * x.B, x.T] },
    ref: { chosen: x.refChosen, rejected: x.refRejected },
    beta: x.beta,
    lossType: 'sigmoid',
  });
  return { loss: out.loss, grad: out.grad!.data as Float32Array };
}

function compare(want: { loss: number; grad: Float32Array }, got: { loss: number; grad: Float32Array }) {
  if (got.grad.length !== want.grad.length) throw new Error(`grad has ${got.grad.length} elements, want ${want.grad.length}`);
  const lossErr = Math.abs(got.loss - want.loss) / Math.max(Math.abs(want.loss), 1e-30);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.grad.length; i++) {
    const d = got.grad[i] - want.grad[i];
    num += d * d;
    den += want.grad[i] * want.grad[i];
  }
  const gradErr = Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
  return { lossErr, gradErr, ok: lossErr < LOSS_TOL && gradErr < GRAD_TOL };
}

/** Elements of ignored rows (label -100) whose gradient is not exactly 0. */
function ignoredNonzero(x: PeerInputs, grad: Float32Array): number {
  let bad = 0;
  for (let r = 0; r < x.labels.length; r++) {
    if (x.labels[r] !== -100) continue;
    for (let v = r * x.V, end = v + x.V; v < end; v++) if (grad[v] !== 0) bad++;
  }
  return bad;
}

function fmtErr(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  if (e && typeof e === 'object' && 'message' in e) return String((e as { message: unknown }).message);
  return String(e);
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

async function checkPeer(peer: Peer, x: PeerInputs, runs: number, want = expected(x)) {
  const label = `${peer.name.padEnd(20)} B=${x.B} T=${x.T} V=${x.V}`;
  let handle: Awaited<ReturnType<Peer['setup']>> | undefined;
  try {
    const t0 = performance.now();
    handle = await peer.setup(x);
    const setupMs = performance.now() - t0;
    const times: number[] = [];
    let res = { lossErr: NaN, gradErr: NaN, ok: false };
    for (let k = 0; k < runs; k++) {
      const t1 = performance.now();
      const got = await handle.run();
      times.push(performance.now() - t1);
      const c = compare(want, got);
      const bad = ignoredNonzero(x, got.grad);
      if (bad) {
        c.ok = false;
        console.log(`     ${peer.name}: ${bad} gradient elements of ignored rows are not 0`);
      }
      if (k === 0 || !c.ok) res = c;
    }
    const timing = x.logits.length > 1e6
      ? `  setup ${setupMs.toFixed(0)} ms, runs ${times.map((t) => t.toFixed(0)).join(' / ')} ms`
      : '';
    console.log(
      `${res.ok ? 'ok  ' : 'FAIL'} ${label}  loss ${want.loss.toPrecision(6)}: rel err ${res.lossErr.toExponential(2)}, grad rel L2 err ${res.gradErr.toExponential(2)}${timing}`,
    );
    return res.ok;
  } catch (e) {
    console.log(`FAIL ${label}  failed: ${fmtErr(e)}`);
    return false;
  } finally {
    try {
      await handle?.dispose();
    } catch (e) {
      console.log(`     ${peer.name}: dispose failed: ${fmtErr(e)}`);
    }
  }
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main() {
  const size = arg('--size');
  const only = arg('--peer');
  const runs = Number(arg('--runs') ?? (size ? 2 : 1));
  const peers = only ? PEERS.filter((p) => p.name === only) : PEERS;
  if (peers.length === 0) throw new Error(`no peer named ${only}; have ${PEERS.map((p) => p.name).join(', ')}`);
  let failed = 0;

  if (size) {
    const [B, T, V] = size.split(',').map(Number);
    const x = makeCase(B, T, V, 7);
    const t0 = performance.now();
    const want = expected(x);
    const fusedMs = performance.now() - t0;
    console.log(`fused-dpo            B=${B} T=${T} V=${V}  ${fusedMs.toFixed(0)} ms (reference result, first call)`);
    for (const p of peers) if (!(await checkPeer(p, x, runs, want))) failed++;
    const ru = process.resourceUsage();
    console.log(`     peak RSS of this process: ${mb(ru.maxRSS * 1024)}`);
  } else {
    const cases: [number, number, number][] = [[1, 4, 17], [2, 8, 50], [3, 16, 257]];
    for (const [B, T, V] of cases) {
      const x = makeCase(B, T, V, B * 1000 + T * 10 + V, B === 3);
      for (const p of peers) if (!(await checkPeer(p, x, 2))) failed++;
    }
    if (process.argv.includes('--big')) {
      // One child per peer, so one's memory (or crash) does not touch the others.
      const self = fileURLToPath(import.meta.url);
      for (const p of peers) {
        const child = spawnSync(process.execPath, [...process.execArgv, self, '--size', '4,256,32000', '--peer', p.name, '--runs', arg('--big-runs') ?? '3'], {
          stdio: 'inherit',
          timeout: 30 * 60_000,
        });
        if (child.status !== 0) {
          failed++;
          console.log(`FAIL ${p.name}: child exited with ${child.status ?? child.signal}${child.error ? ` (${child.error.message})` : ''}`);
        }
      }
    }
  }
  console.log(failed ? `${failed} failed` : 'all passed');
  process.exitCode = failed ? 1 : 0;
}

await main();
