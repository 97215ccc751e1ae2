#!/usr/bin/env node
// `fused-dpo train`: DPO's controlled-sentiment experiment on a laptop (lib/train/).
import { relative } from 'node:path';
import { parseArgs } from 'node:util';

import { doctor, formatDoctor } from './doctor.js';
import { LOSS_TYPES, type LossType } from './index.js';
import { DEFAULT_OPTIONS, runDemo, TINY_OPTIONS, type DemoOptions, type ExperimentOptions } from './train/index.js';

const d = DEFAULT_OPTIONS;
const HELP = `Usage: fused-dpo train [options]

DPO's controlled-sentiment experiment, laptop-sized: a word-level language model is pretrained on
the Brown corpus (the reference), continuations it samples for corpus prompts are ranked by their
AFINN sentiment (the gold reward), and DPO trains a policy on those preferences, once per beta.
Writes <out>/<name>/ with metrics.jsonl, frontier.svg (gold reward against KL to the reference),
summary.json, samples.md and timing.json. The same seed gives the same numbers.

Options:
  --betas <list>            betas, comma-separated               (default ${d.betas.join(',')})
  --loss-type <type[,..]>   fused-dpo loss type(s)               (default ${d.lossType})
                            one of: ${LOSS_TYPES.join(', ')}
  --steps <n>               DPO steps per beta                   (default ${d.steps})
  --batch-size <n>          preference pairs per step            (default ${d.batchSize})
  --lr <x>                  DPO Adam learning rate               (default ${d.lr})
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
  --tiny                    a run of a few seconds with a tiny model (smoke test)
  --quiet                   no progress bar
  -h, --help                this text
`;

class UsageError extends Error {}

function integer(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n)) throw new UsageError(`--${flag} must be an integer, got '${text}'`);
  return n;
}

function number(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${flag} must be a number, got '${text}'`);
  return n;
}

function parseTrain(argv: string[]): DemoOptions | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      betas: { type: 'string' },
      'loss-type': { type: 'string' },
      steps: { type: 'string' },
      'batch-size': { type: 'string' },
      lr: { type: 'string' },
      'eval-every': { type: 'string' },
      hidden: { type: 'string' },
      embed: { type: 'string' },
      context: { type: 'string' },
      vocab: { type: 'string' },
      'sft-steps': { type: 'string' },
      'train-prompts': { type: 'string' },
      'eval-prompts': { type: 'string' },
      'completion-length': { type: 'string' },
      seed: { type: 'string' },
      threads: { type: 'string' },
      out: { type: 'string' },
      name: { type: 'string' },
      tiny: { type: 'boolean' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  let lossType: LossType | LossType[] | undefined;
  if (values['loss-type'] !== undefined) {
    const list = values['loss-type'].split(',').map((s) => s.trim());
    for (const t of list) {
      if (!(LOSS_TYPES as readonly string[]).includes(t)) throw new UsageError(`--loss-type: '${t}' is not one of ${LOSS_TYPES.join(', ')}`);
    }
    lossType = list.length === 1 ? (list[0] as LossType) : (list as LossType[]);
  }
  const betas = values.betas?.split(',').map((s) => number('betas', s)!);
  const given: Partial<ExperimentOptions> = {
    betas,
    lossType,
    steps: integer('steps', values.steps),
    batchSize: integer('batch-size', values['batch-size']),
    lr: number('lr', values.lr),
    evalEvery: integer('eval-every', values['eval-every']),
    hidden: integer('hidden', values.hidden),
    embed: integer('embed', values.embed),
    context: integer('context', values.context),
    vocabWords: integer('vocab', values.vocab),
    sftSteps: integer('sft-steps', values['sft-steps']),
    trainPrompts: integer('train-prompts', values['train-prompts']),
    evalPrompts: integer('eval-prompts', values['eval-prompts']),
    completionLength: integer('completion-length', values['completion-length']),
    seed: integer('seed', values.seed),
    threads: integer('threads', values.threads),
  };
  const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) as Partial<ExperimentOptions>;
  return { ...(values.tiny ? TINY_OPTIONS : {}), ...defined, out: values.out, name: values.name, quiet: values.quiet };
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('   ')).join('\n');
}

function train(argv: string[]): number {
  const options = parseTrain(argv);
  if (options === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  const run = runDemo(options);
  const f = (x: number | null) => (x === null || !Number.isFinite(x) ? '-' : x.toFixed(2));
  const rows = [
    ['', 'gold reward', 'KL (nats)', 'reward acc (train)', 'reward acc (held-out)'],
    ['reference (SFT)', f(run.referenceReward), '0', '', ''],
    ...run.final.map((r) => [`β = ${r.beta} (step ${r.step})`, f(r.goldReward), f(r.kl), f(r.trainAccuracy), f(r.heldOutAccuracy)]),
  ];
  const where = relative(process.cwd(), run.dir) || '.';
  process.stdout.write(`\n${table(rows)}\n\nwrote ${where}/ (${run.files.map((p) => p.slice(run.dir.length + 1)).join(', ')}) in ${run.seconds.toFixed(0)} s\n`);
  return 0;
}

function main(argv: string[]): number {
  const [command, ...rest] = argv;
  try {
    if (command === 'train') return train(rest);
    if (command === 'doctor') {
      const report = doctor();
      process.stdout.write(`${formatDoctor(report)}\n`);
      return report.ok ? 0 : 1;
    }
    if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
      process.stdout.write(
        `Usage: fused-dpo <command>\n\nCommands:\n  train    DPO's controlled-sentiment demo (fused-dpo train --help)\n` +
          `  doctor   what is installed, and a self-check against the float64 reference\n`,
      );
      return command === undefined ? 1 : 0;
    }
    throw new UsageError(`unknown command '${command}' (try: fused-dpo train, fused-dpo doctor)`);
  } catch (error) {
    const e = error as Error & { code?: string };
    if (error instanceof UsageError || e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || error instanceof RangeError) {
      process.stderr.write(`fused-dpo: ${e.message}\n`);
      return 2;
    }
    throw error;
  }
}

process.exitCode = main(process.argv.slice(2));
