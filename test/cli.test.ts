// The command line as a user meets it: a bad flag gets one line (the flag, what it takes, what it
// got) and exit code 2; --version; the output folder is checked before the run; a tiny run has
// its own folder and never writes over a run unless --force; the progress line shows the
// evaluation of the step it names; the doctor reports, rather than crashes, when no binary loads.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'lib', 'cli.ts');
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };

function fusedDpo(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string; seconds: number } {
  const started = Date.now();
  const child = spawnSync(process.execPath, ['--import', 'tsx', cli, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: child.status, stdout: child.stdout, stderr: child.stderr, seconds: (Date.now() - started) / 1000 };
}

// Settings for a run of a few seconds; --tiny under them.
const QUICK = ['--tiny', '--steps', '10', '--eval-every', '5', '--sft-steps', '5', '--train-prompts', '300', '--eval-prompts', '20'];

const BAD_FLAGS: [string[], RegExp][] = [
  [['--steps', '-1'], /^fused-dpo train: --steps takes a positive integer, got '-1'$/],
  [['--bogus'], /^fused-dpo train: unknown option '--bogus' \(fused-dpo train --help lists the options\)$/],
  [['--batch-size', '0'], /^fused-dpo train: --batch-size takes a positive integer, got '0'$/],
  [['--vocab', '5'], /^fused-dpo train: --vocab takes a number of words large enough that .* got '5'$/],
  [['--lr=abc'], /^fused-dpo train: --lr takes a positive number, got 'abc'$/],
  [['--steps'], /^fused-dpo train: --steps takes a positive integer, got nothing$/],
  [['--quiet=yes'], /^fused-dpo train: --quiet takes no value, got 'yes'$/],
  [['--context', '9'], /^fused-dpo train: --context takes a positive integer at most 4 .*, got '9'$/],
  [['--methods', 'dpo,ppo'], /^fused-dpo train: --methods takes one or more of dpo, ppo-gt, preferred-ft, unlikelihood, each once, got 'dpo,ppo'$/],
];

// An empty --out of their own: a run folder left by `npm run demo` in the checkout must not answer
// before a flag does.
const badFlagsOut = mkdtempSync(join(tmpdir(), 'fdpo-cli-flags-'));
test.after(() => rmSync(badFlagsOut, { recursive: true, force: true }));

for (const [args, want] of BAD_FLAGS) {
  test(`train ${args.join(' ')}: one line naming the flag, exit code 2`, () => {
    const run = fusedDpo(['train', '--quiet', '--out', badFlagsOut, ...args]);
    assert.is(run.status, 2, run.stderr);
    const lines = run.stderr.split('\n').filter((line) => line !== '');
    assert.is(lines.length, 1, run.stderr);
    assert.match(lines[0]!, want);
    assert.not.match(run.stderr, /batchSize|vocabWords|ERR_PARSE_ARGS|\n\s+at /);
    assert.is(run.stdout, '');
  });
}

test('--version prints the package version', () => {
  for (const args of [['--version'], ['train', '--version']]) {
    const run = fusedDpo(args);
    assert.is(run.status, 0, run.stderr);
    assert.is(run.stdout, `fused-dpo ${version}\n`);
  }
});

test('train --out <a file>: refused before the run starts', () => {
  const temp = mkdtempSync(join(tmpdir(), 'fdpo-cli-'));
  try {
    const file = join(temp, 'README.md');
    writeFileSync(file, 'not a folder\n');
    const run = fusedDpo(['train', ...QUICK, '--out', file]);
    assert.is(run.status, 2, run.stderr);
    assert.match(run.stderr, new RegExp(`^fused-dpo train: --out takes a folder the run can be written in \\(.*ENOTDIR\\), got '${file}'\\n$`));
    assert.not.match(run.stderr, /SFT|corpus/, 'nothing ran');
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
});

test('train --tiny: its own folder, the progress line shows its step\'s evaluation, no overwrite without --force', () => {
  const temp = mkdtempSync(join(tmpdir(), 'fdpo-cli-'));
  try {
    // The full demo's folder, as `npm run demo` left it.
    const full = join(temp, 'sentiment-sigmoid-seed1');
    mkdirSync(full);
    writeFileSync(join(full, 'metrics.jsonl'), 'the full run\n');

    const run = fusedDpo(['train', ...QUICK, '--out', temp]);
    assert.is(run.status, 0, run.stderr);
    assert.is(readFileSync(join(full, 'metrics.jsonl'), 'utf8'), 'the full run\n', 'the full run is untouched');
    const tiny = join(temp, 'sentiment-sigmoid-seed1-tiny');
    const records = readFileSync(join(tiny, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { kind: string; method?: string; step?: number; goldReward?: number; kl?: number });
    const evals = new Map(records.filter((r) => r.kind === 'eval' && r.method === 'dpo').map((r) => [r.step!, r]));

    // stderr is not a terminal: one plain line per tenth of a phase, e.g. "DPO β=0.1: 5/10  loss … reward 0.250  kl 0.012".
    const shown = [...run.stderr.matchAll(/DPO β=[\d.]+: (\d+)\/\d+ .*reward (-?[\d.]+) +kl (-?[\d.]+)/g)];
    const atEvals = shown.filter((m) => evals.has(Number(m[1])) && Number(m[1]) > 0);
    assert.ok(atEvals.length >= 2, `progress lines at evaluated steps:\n${run.stderr}`);
    for (const [, step, reward, kl] of atEvals) {
      const e = evals.get(Number(step))!;
      assert.ok(Math.abs(Number(reward) - e.goldReward!) < 1.5e-3 && Math.abs(Number(kl) - e.kl!) < 1.5e-3, `step ${step}: shown reward ${reward} kl ${kl}, evaluated ${e.goldReward} ${e.kl}`);
    }

    // every method ran, on one frame, and summary.json holds each one's frontier
    const summary = JSON.parse(readFileSync(join(tiny, 'summary.json'), 'utf8')) as { final: { label: string }[]; frontiers: { method: string; points: { kl: number; goldReward: number }[] }[] };
    assert.equal(summary.final.map((f) => f.label), ['DPO β=0.1', 'PPO-GT β=0.1', 'Preferred-FT', 'Unlikelihood α=1']);
    assert.equal(summary.frontiers.map((f) => f.method), ['dpo', 'ppo-gt', 'preferred-ft', 'unlikelihood']);
    for (const f of summary.frontiers) assert.ok(f.points.length >= 1 && f.points[0]!.kl <= 0, `${f.method}: its frontier starts at the reference (KL 0, or a sampling estimate below it)`);
    const svg = readFileSync(join(tiny, 'frontier.svg'), 'utf8');
    for (const name of ['DPO', 'PPO-GT', 'Preferred-FT', 'Unlikelihood']) assert.ok(svg.includes(`>${name}`), `${name} in the legend`);
    for (const label of ['PPO-GT β=0.1', 'Preferred-FT', 'Unlikelihood α=1']) assert.match(run.stderr, new RegExp(`${label}: \\d+/10 .*reward`), `${label}'s progress`);

    const again = fusedDpo(['train', ...QUICK, '--out', temp]);
    assert.is(again.status, 2, again.stderr);
    assert.match(again.stderr, /^fused-dpo train: .*sentiment-sigmoid-seed1-tiny already holds a run: --force writes over it, or --name gives this one another folder\n$/);

    writeFileSync(join(tiny, 'metrics.jsonl'), 'stale\n');
    const forced = fusedDpo(['train', ...QUICK, '--out', temp, '--force', '--quiet']);
    assert.is(forced.status, 0, forced.stderr);
    assert.ok(readFileSync(join(tiny, 'metrics.jsonl'), 'utf8').startsWith('{"kind":"config"'), '--force wrote the run over the old one');
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
});

test('doctor with no binary that loads: every place tried and why, exit code 1, no stack trace', () => {
  const temp = mkdtempSync(join(tmpdir(), 'fdpo-cli-'));
  try {
    const missing = join(temp, 'nonexistent.node');
    const run = fusedDpo(['doctor'], { FUSED_DPO_NATIVE: missing });
    assert.is(run.status, 1, run.stderr);
    assert.is(run.stderr, '');
    assert.match(run.stdout, /^binary: +none loads \(ERR_FDPO_NATIVE_NOT_FOUND\)$/m);
    assert.ok(run.stdout.includes(`FUSED_DPO_NATIVE: ${missing}: no such file`), run.stdout);

    const garbage = join(temp, 'garbage.node');
    writeFileSync(garbage, 'not a shared object');
    const bad = fusedDpo(['doctor'], { FUSED_DPO_NATIVE: garbage });
    assert.is(bad.status, 1, bad.stderr);
    assert.is(bad.stderr, '');
    assert.match(bad.stdout, new RegExp(`FUSED_DPO_NATIVE: ${garbage}: .*(ELF|invalid|too short)`));
    assert.not.ok(existsSync(join(temp, 'build')));
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
});

test.run();
