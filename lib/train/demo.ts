// The demo: run the experiment with a progress bar and write runs/<name>/:
//   metrics.jsonl  every record (config, SFT losses, pairs, DPO steps, evaluations), one per line;
//                  no timings, so two runs with the same seed and settings give identical files
//   frontier.svg   gold reward against KL to the reference: every checkpoint of every run, one
//                  colour per method, each method's frontier as a line
//   frontier-zoom.svg  the same up to the largest KL a pair method reached (PPO-GT can run far beyond)
//   summary.json   the final numbers per run, and each method's frontier (its undominated checkpoints)
//   samples.md     reference and policy continuations of a few held-out prompts
//   timing.json    wall-clock seconds per phase and the process's CPU seconds (the only file that
//                  changes between equal runs)
// The folder is checked before the run starts: a run folder that holds files is kept unless asked.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';

import {
  EXPERIMENT_OPTION_KEYS,
  resolveOptions,
  runExperiment,
  TINY_OPTIONS,
  type ExperimentOptions,
  type ExperimentRecord,
  type ExperimentResult,
} from './experiment.js';
import { refuseUnknownKeys, TrainOptionError } from './options.js';
import { METHOD_NAMES, type Method } from './experiment.js';
import { methodsFrontierSvg, paretoFrontier } from './plot.js';
import { ProgressBar } from './progress.js';

export interface DemoOptions extends Partial<ExperimentOptions> {
  /** Parent folder of the run (default 'runs'). */
  out?: string;
  /** The run's folder name (default `sentiment-<lossType>-seed<seed>`, with `-tiny` after it for a tiny run). */
  name?: string;
  /** TINY_OPTIONS under the options given: a run of a few seconds (a smoke test). */
  tiny?: boolean;
  /** Write over a run folder that already holds files (default: refuse, before the run starts). */
  force?: boolean;
  /** No progress bar. */
  quiet?: boolean;
  /** Where the progress bar goes (default process.stderr). */
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
}

const DEMO_OPTION_KEYS = [
  ...EXPERIMENT_OPTION_KEYS,
  ...Object.keys({ out: 1, name: 1, tiny: 1, force: 1, quiet: 1, progressStream: 1 } satisfies Record<Exclude<keyof DemoOptions, keyof ExperimentOptions>, 1>),
];

/** A run folder that already holds files, and the run was not asked to write over it. */
export class RunExistsError extends Error {
  readonly code = 'ERR_FDPO_RUN_EXISTS';

  constructor(readonly dir: string) {
    super(`fused-dpo: ${dir} already holds a run; pass force: true to write over it, or another name`);
  }
}

/** Make the run's folder, or say why it cannot be used, before any work. */
function prepareRunFolder(out: string, dir: string, force: boolean): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw new TrainOptionError('out', `a folder the run can be written in (making ${dir}: ${e.code ?? e.message})`, out);
  }
  if (!force && readdirSync(dir).length > 0) throw new RunExistsError(dir);
}

export interface FinalNumbers {
  method: Method;
  /** β (DPO), the KL coefficient (PPO-GT), α (Unlikelihood), null (Preferred-FT). */
  setting: number | null;
  label: string;
  step: number;
  goldReward: number;
  kl: number;
  /** Reward accuracy (β·log-ratio) on the training batches since the previous evaluation; null for PPO-GT. */
  trainAccuracy: number | null;
  /** The pair methods' loss metrics on the held-out pairs; null for PPO-GT. */
  heldOutAccuracy: number | null;
  heldOutLoss: number | null;
}

/** A method's frontier: the checkpoints of its runs that no other checkpoint of it beats on both reward and KL. */
export interface MethodFrontier {
  method: Method;
  points: { label: string; step: number; kl: number; goldReward: number }[];
}

export interface DemoResult {
  dir: string;
  files: string[];
  result: ExperimentResult;
  final: FinalNumbers[];
  frontiers: MethodFrontier[];
  referenceReward: number;
  seconds: number;
}

/** Round to 6 significant digits for the JSON files (the math runs at full precision). */
function roundNumbers(_key: string, value: unknown): unknown {
  return typeof value === 'number' && Number.isFinite(value) && !Number.isInteger(value) ? Number(value.toPrecision(6)) : value;
}

function lossLabel(lossType: ExperimentOptions['lossType']): string {
  return Array.isArray(lossType) ? lossType.join('+') : lossType;
}

export function finalNumbers(result: ExperimentResult): FinalNumbers[] {
  return result.runs.map((run) => {
    const last = run.evals[run.evals.length - 1]!;
    const pairs = 'heldOut' in last ? last : null;
    return {
      method: run.method,
      setting: run.setting,
      label: run.label,
      step: last.step,
      goldReward: last.goldReward,
      kl: last.kl,
      trainAccuracy: pairs?.train?.accuracy ?? null,
      heldOutAccuracy: pairs?.heldOut.accuracy ?? null,
      heldOutLoss: pairs?.heldOut.loss ?? null,
    };
  });
}

/** The methods of a result, in the order they ran. */
function methodsOf(result: ExperimentResult): Method[] {
  return [...new Set(result.runs.map((r) => r.method))];
}

/** Each method's frontier over the checkpoints of all its runs. */
export function frontiersOf(result: ExperimentResult): MethodFrontier[] {
  return methodsOf(result).map((method) => ({
    method,
    points: paretoFrontier(result.runs.filter((r) => r.method === method).flatMap((r) => r.evals.map((e) => ({ label: r.label, step: e.step, kl: e.kl, reward: e.goldReward })))).map(
      ({ label, step, kl, reward }) => ({ label, step, kl, goldReward: reward }),
    ),
  }));
}

/** The largest KL a pair method's checkpoint reached (the whole range when only PPO-GT ran). */
function zoomKl(result: ExperimentResult): number {
  const kls = result.runs.filter((r) => r.method !== 'ppo-gt').flatMap((r) => r.evals.map((e) => e.kl));
  return kls.length ? Math.max(...kls) : Infinity;
}

/** Plot every method's checkpoints and frontier; with maxKl, only the checkpoints up to that KL. */
export function frontierOf(result: ExperimentResult, maxKl = Infinity): string {
  const o = result.options;
  const shown = (kl: number) => !(kl > maxKl);
  const settings = (method: Method) => result.runs.filter((r) => r.method === method && r.setting !== null).map((r) => r.setting);
  return methodsFrontierSvg(
    methodsOf(result).map((method) => ({
      label: `${METHOD_NAMES[method]}${settings(method).length ? ` (${method === 'unlikelihood' ? 'α' : 'β'} ${settings(method).join(', ')})` : ''}`,
      runs: result.runs
        .filter((r) => r.method === method)
        .map((run) => ({ label: run.label, points: run.evals.filter((e) => shown(e.kl)).map((e) => ({ kl: e.kl, reward: e.goldReward, step: e.step })) })),
    })),
    {
      title: `Reward/KL frontier: controlled sentiment on the Brown corpus${maxKl < Infinity ? `, KL ≤ ${Number(maxKl.toPrecision(3))}` : ''}`,
      subtitle: `DPO loss ${lossLabel(o.lossType)} · ${o.steps} steps × ${2 * o.batchSize} sequences · ${result.pairs.train} training pairs · ${o.hidden} hidden units, ${result.vocabSize} tokens · seed ${o.seed}`,
      referenceReward: result.reference.goldReward,
    },
  );
}

function samplesMarkdown(result: ExperimentResult): string {
  const lines = ['# Continuations of held-out prompts', '', 'Gold reward in brackets. `<s>` is a sentence boundary, `<unk>` a word outside the vocabulary.', ''];
  for (const run of result.runs) {
    lines.push(`## ${run.label}`, '', '| prompt | reference (SFT) | policy |', '|---|---|---|');
    for (const s of run.samples) {
      const cell = (t: string) => t.replace(/\|/g, '\\|');
      lines.push(`| ${cell(s.prompt)} | (${s.referenceReward}) ${cell(s.reference)} | (${s.policyReward}) ${cell(s.policy)} |`);
    }
    lines.push('');
  }
  return lines.join('\n');
}

/** Run the experiment and write its folder. */
export function runDemo(options: DemoOptions = {}): DemoResult {
  refuseUnknownKeys('runDemo options', options, DEMO_OPTION_KEYS);
  const { out = 'runs', name, tiny = false, force = false, quiet = false, progressStream, ...given } = options;
  const experiment = { ...(tiny ? TINY_OPTIONS : {}), ...Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) };
  const o = resolveOptions(experiment);
  const dir = resolve(out, name ?? `sentiment-${lossLabel(o.lossType)}-seed${o.seed}${tiny ? '-tiny' : ''}`);
  prepareRunFolder(out, dir, force);
  const bar = new ProgressBar({ stream: progressStream, silent: quiet });
  const started = Date.now();
  const cpuBefore = process.cpuUsage();
  const phaseSeconds: Record<string, number> = {};
  let phaseLabel = '';
  const phaseCpuSeconds: Record<string, number> = {};
  let phaseStart = started;
  let phaseCpu = cpuBefore;
  const closePhase = () => {
    if (!phaseLabel) return;
    phaseSeconds[phaseLabel] = (Date.now() - phaseStart) / 1000;
    const used = process.cpuUsage(phaseCpu);
    phaseCpuSeconds[phaseLabel] = (used.user + used.system) / 1e6;
  };
  const records: string[] = [];
  const result = runExperiment(o, {
    onRecord: (r: ExperimentRecord) => records.push(JSON.stringify(r, roundNumbers)),
    onPhase: (_phase, label, total) => {
      closePhase();
      phaseLabel = label;
      phaseStart = Date.now();
      phaseCpu = process.cpuUsage();
      bar.start(label, total);
    },
    onProgress: (done, fields) => bar.update(done, fields),
  });
  closePhase();
  bar.finish();
  const seconds = (Date.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  // every thread of the process (the kernel pool's and fused-dpo's too): on an idle machine with
  // n cores, wall-clock seconds lie between cpuSeconds / n and cpuSeconds
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;

  const final = finalNumbers(result);
  const frontiers = frontiersOf(result);
  const write = (file: string, text: string) => {
    writeFileSync(join(dir, file), text);
    return join(dir, file);
  };
  const files = [
    write('metrics.jsonl', records.join('\n') + '\n'),
    write('frontier.svg', frontierOf(result)),
    write('frontier-zoom.svg', frontierOf(result, zoomKl(result))),
    write(
      'summary.json',
      JSON.stringify({ options: { ...o, threads: undefined }, vocabSize: result.vocabSize, reference: result.reference, pairs: result.pairs, final, frontiers }, roundNumbers, 2) + '\n',
    ),
    write('samples.md', samplesMarkdown(result)),
    write(
      'timing.json',
      JSON.stringify({ seconds, cpuSeconds, phases: phaseSeconds, phaseCpuSeconds, node: process.version, cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length }, roundNumbers, 2) + '\n',
    ),
  ];
  return { dir, files, result, final, frontiers, referenceReward: result.reference.goldReward, seconds };
}
