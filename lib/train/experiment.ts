// DPO's controlled-sentiment experiment (Rafailov et al. 2023, §6.1 and Figure 2, left),
// laptop-sized: a word-level model pretrained on the Brown corpus is the reference; continuations
// it samples for corpus prompts are ranked by the AFINN sentiment of their words; each method
// trains a policy from the reference (DPO for each β, PPO-GT on the gold reward itself for each KL
// coefficient, Preferred-FT, Unlikelihood), and every policy's gold reward is traced against its
// KL to the reference on the same held-out prompts.
import { LOSS_TYPES, type LossType } from '../loss-kinds.js';
import { loadCorpus, promptReadySentences, samplePrompts, type Corpus } from './data.js';
import { isEvalStep, samplePolicy, trainDpo, type DpoData, type DpoEvalRecord, type DpoStepRecord } from './dpo.js';
import { trainPpo, type PpoEvalRecord, type PpoStepRecord } from './ppo.js';
import { WordLM, type ModelConfig } from './model.js';
import { buildPairSet, type PairSet } from './pairs.js';
import { defaultThreads, kernelPool, setDefaultThreads } from './pool.js';
import { refuseUnknownKeys, TrainOptionError } from './options.js';
import { GoldReward } from './reward.js';
import { deriveSeed, Rng } from './rng.js';
import { pretrain } from './sft.js';

/** The methods of the DPO paper's Figure 2 (left). */
export const METHODS = ['dpo', 'ppo-gt', 'preferred-ft', 'unlikelihood'] as const;
export type Method = (typeof METHODS)[number];

export const METHOD_NAMES: Record<Method, string> = { dpo: 'DPO', 'ppo-gt': 'PPO-GT', 'preferred-ft': 'Preferred-FT', unlikelihood: 'Unlikelihood' };

export interface ExperimentOptions {
  /** The methods to run, each from the same reference, pairs (PPO-GT: their prompts) and evaluation. */
  methods: Method[];
  /** One DPO run per β. */
  betas: number[];
  /** DPO's fused-dpo loss type(s). */
  lossType: LossType | LossType[];
  /** One PPO-GT run per KL coefficient (policyLoss's β). */
  ppoBetas: number[];
  /** PPO-GT: continuations sampled per prompt (the group of the baseline); a step has batchSize·2 / this many prompts, as many sequences as a DPO step. */
  samplesPerPrompt: number;
  /** PPO-GT's Adam learning rate. */
  ppoLr: number;
  /** Unlikelihood's α. */
  unlikelihoodAlpha: number;
  /** Steps per run, pairs per step, Adam learning rate, steps between evaluations. */
  steps: number;
  batchSize: number;
  lr: number;
  evalEvery: number;
  seed: number;
  /** Model: vocabulary words (plus <unk> and <s>), context window, embedding size, hidden units. */
  vocabWords: number;
  context: number;
  embed: number;
  hidden: number;
  /** Next-token pretraining of the reference: steps, tokens per step, learning rate. */
  sftSteps: number;
  sftBatchSize: number;
  sftLr: number;
  /** Prompt words (after BOS) and continuation tokens. */
  promptWords: number;
  completionLength: number;
  /** Training prompts (two samples each: the pairs), held-out prompts for the policy samples and for held-out pairs. */
  trainPrompts: number;
  evalPrompts: number;
  heldOutPairPrompts: number;
  /** Threads for the model's products and fused-dpo's calls (default: the cores; at most 8 for the model). Results do not depend on it. */
  threads?: number;
}

export const DEFAULT_OPTIONS: ExperimentOptions = {
  methods: [...METHODS],
  betas: [0.1, 0.5, 2],
  lossType: 'sigmoid',
  ppoBetas: [0.5, 1, 2],
  samplesPerPrompt: 4,
  ppoLr: 3e-3,
  unlikelihoodAlpha: 1,
  steps: 150,
  batchSize: 16,
  lr: 3e-3,
  evalEvery: 15,
  seed: 1,
  vocabWords: 2000,
  context: 3,
  embed: 32,
  hidden: 64,
  sftSteps: 600,
  sftBatchSize: 128,
  sftLr: 3e-3,
  promptWords: 3,
  completionLength: 12,
  trainPrompts: 4000,
  evalPrompts: 256,
  heldOutPairPrompts: 192,
};

/** Settings for a run of a few seconds (tests, smoke checks): a tiny model and a few hundred pairs. */
export const TINY_OPTIONS: Partial<ExperimentOptions> = {
  betas: [0.1],
  ppoBetas: [0.1],
  steps: 60,
  batchSize: 16,
  lr: 1e-2,
  evalEvery: 30,
  vocabWords: 1000,
  embed: 16,
  hidden: 32,
  sftSteps: 120,
  sftBatchSize: 64,
  trainPrompts: 2500,
  evalPrompts: 160,
  heldOutPairPrompts: 48,
};

export type ExperimentRecord =
  | ({ kind: 'config' } & Omit<ExperimentOptions, 'threads'> & { vocabSize: number; parameters: number; positiveWords: number; negativeWords: number })
  | { kind: 'sft'; step: number; loss: number }
  | { kind: 'reference'; heldOutLossBefore: number; heldOutLoss: number; trainLoss: number }
  | { kind: 'pairs'; split: 'train' | 'heldOut'; prompts: number; pairs: number; ties: number; chosenReward: number; rejectedReward: number; refChosenLogp: number; refRejectedLogp: number }
  | ({ kind: 'train'; method: Exclude<Method, 'ppo-gt'>; setting: number | null } & Omit<DpoStepRecord, 'metrics'> & { accuracy: number; margin: number; chosenReward: number; rejectedReward: number })
  | ({ kind: 'train'; method: 'ppo-gt'; setting: number } & PpoStepRecord)
  | ({ kind: 'eval'; method: Exclude<Method, 'ppo-gt'>; setting: number | null } & DpoEvalRecord)
  | ({ kind: 'eval'; method: 'ppo-gt'; setting: number } & PpoEvalRecord);

export type ExperimentPhase = 'corpus' | 'sft' | 'pairs' | 'train';

export interface ExperimentEvents {
  /** Every metrics record, in order (the run's JSON lines). */
  onRecord?(record: ExperimentRecord): void;
  /** A phase starts: its label and how many units of work it has. */
  onPhase?(phase: ExperimentPhase, label: string, total: number): void;
  /** Progress inside the current phase, with live metrics to show. */
  onProgress?(done: number, fields: Record<string, number>): void;
}

/** One training run of one method at one setting. */
export interface MethodRun {
  method: Method;
  /** The run's hyperparameter: β for DPO, the KL coefficient for PPO-GT, α for Unlikelihood, null for Preferred-FT. */
  setting: number | null;
  /** E.g. 'DPO β=0.1'. */
  label: string;
  /** Evaluations in step order (step 0 is the reference); the pair methods' carry held-out pair metrics. */
  evals: (DpoEvalRecord | PpoEvalRecord)[];
  /** Final policy samples for a few held-out prompts (decoded), with their gold rewards. */
  samples: { prompt: string; reference: string; referenceReward: number; policy: string; policyReward: number }[];
}

export interface ExperimentResult {
  options: ExperimentOptions;
  vocabSize: number;
  reference: { heldOutLoss: number; goldReward: number };
  pairs: { train: number; heldOut: number };
  runs: MethodRun[];
}

function mean(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return a.length ? s / a.length : 0;
}

function pairsRecord(split: 'train' | 'heldOut', set: PairSet): ExperimentRecord {
  return {
    kind: 'pairs',
    split,
    prompts: set.prompts,
    pairs: set.pairs.length,
    ties: set.ties,
    chosenReward: mean(set.pairs.map((p) => p.chosenReward)),
    rejectedReward: mean(set.pairs.map((p) => p.rejectedReward)),
    refChosenLogp: mean(set.refChosen),
    refRejectedLogp: mean(set.refRejected),
  };
}

/** What one option takes: the words for an error message, and the check. */
export interface OptionRule {
  expected: string;
  ok(value: unknown): boolean;
}

const positiveInteger: OptionRule = { expected: 'a positive integer', ok: (v) => Number.isInteger(v) && (v as number) >= 1 };
const positiveNumber: OptionRule = { expected: 'a positive number', ok: (v) => typeof v === 'number' && v > 0 && Number.isFinite(v) };
const isLossType = (t: unknown) => (LOSS_TYPES as readonly unknown[]).includes(t);

/** Every experiment option and what it takes (resolveOptions checks them; the CLI names its flags' values by them). */
const positiveNumbers: OptionRule = { expected: 'one or more positive numbers', ok: (v) => Array.isArray(v) && v.length > 0 && v.every((b) => positiveNumber.ok(b)) };

export const OPTION_RULES: { readonly [K in keyof ExperimentOptions]-?: OptionRule } = {
  methods: {
    expected: `one or more of ${METHODS.join(', ')}, each once`,
    ok: (v) => Array.isArray(v) && v.length > 0 && v.every((m) => (METHODS as readonly unknown[]).includes(m)) && new Set(v).size === v.length,
  },
  betas: positiveNumbers,
  lossType: {
    expected: `a loss type or a list of them (${LOSS_TYPES.join(', ')})`,
    ok: (v) => (Array.isArray(v) ? v.length > 0 && v.every(isLossType) : isLossType(v)),
  },
  ppoBetas: positiveNumbers,
  samplesPerPrompt: { expected: 'an integer ≥ 2 that divides 2·batchSize', ok: (v) => Number.isInteger(v) && (v as number) >= 2 },
  ppoLr: positiveNumber,
  unlikelihoodAlpha: { expected: 'a finite number ≥ 0', ok: (v) => typeof v === 'number' && v >= 0 && Number.isFinite(v) },
  steps: positiveInteger,
  batchSize: positiveInteger,
  lr: positiveNumber,
  evalEvery: positiveInteger,
  seed: { expected: 'a non-negative integer', ok: (v) => Number.isInteger(v) && (v as number) >= 0 },
  vocabWords: positiveInteger,
  context: positiveInteger,
  embed: positiveInteger,
  hidden: positiveInteger,
  sftSteps: positiveInteger,
  sftBatchSize: positiveInteger,
  sftLr: positiveNumber,
  promptWords: positiveInteger,
  completionLength: positiveInteger,
  trainPrompts: positiveInteger,
  evalPrompts: positiveInteger,
  heldOutPairPrompts: positiveInteger,
  threads: { expected: 'a positive integer (or undefined: the cores)', ok: (v) => v === undefined || positiveInteger.ok(v) },
};

export const EXPERIMENT_OPTION_KEYS = Object.keys(OPTION_RULES) as readonly (keyof ExperimentOptions)[];

/** Check and complete options: an unknown key or a bad value throws an error naming it (UnknownOptionError, TrainOptionError). */
export function resolveOptions(partial: Partial<ExperimentOptions> = {}): ExperimentOptions {
  refuseUnknownKeys('the experiment options', partial, EXPERIMENT_OPTION_KEYS);
  const o: ExperimentOptions = { ...DEFAULT_OPTIONS, ...Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined)) };
  for (const key of EXPERIMENT_OPTION_KEYS) {
    if (!OPTION_RULES[key].ok(o[key])) throw new TrainOptionError(key, OPTION_RULES[key].expected, o[key]);
  }
  // The model's first context is the prompt's last words (BOS included).
  if (o.context > o.promptWords + 1) {
    throw new TrainOptionError('context', `a positive integer at most ${o.promptWords + 1} (the prompt's ${o.promptWords} words and <s>)`, o.context);
  }
  if ((2 * o.batchSize) % o.samplesPerPrompt !== 0) {
    throw new TrainOptionError('samplesPerPrompt', `an integer ≥ 2 that divides 2·batchSize (${2 * o.batchSize}: a PPO-GT step has as many sequences as a DPO step)`, o.samplesPerPrompt);
  }
  return o;
}

/**
 * Refuse, before any training, a vocabulary or prompt count the corpus cannot serve: every prompt
 * is a distinct sentence whose first words are all in the vocabulary.
 */
function checkPromptSupply(corpus: Corpus, o: ExperimentOptions): void {
  const heldOutNeed = o.evalPrompts + o.heldOutPairPrompts;
  const trainMax = promptReadySentences(corpus.train, o.promptWords, false);
  const heldOutMax = promptReadySentences(corpus.heldOut, o.promptWords, false);
  if (o.trainPrompts > trainMax) throw new TrainOptionError('trainPrompts', `at most ${trainMax} (the training sentences long enough for a prompt)`, o.trainPrompts);
  if (heldOutNeed > heldOutMax) {
    throw new TrainOptionError('evalPrompts', `at most ${heldOutMax - o.heldOutPairPrompts} (held-out sentences long enough for a prompt, less ${o.heldOutPairPrompts} for held-out pairs)`, o.evalPrompts);
  }
  const trainHave = promptReadySentences(corpus.train, o.promptWords, true);
  const heldOutHave = promptReadySentences(corpus.heldOut, o.promptWords, true);
  if (o.trainPrompts > trainHave || heldOutNeed > heldOutHave) {
    throw new TrainOptionError(
      'vocabWords',
      `a number of words large enough that ${o.trainPrompts} training and ${heldOutNeed} held-out sentences start with ${o.promptWords} known words (${o.vocabWords} give ${trainHave} and ${heldOutHave})`,
      o.vocabWords,
    );
  }
}

/** The reference model and what comes with it. */
export interface ReferenceStage {
  options: ExperimentOptions;
  corpus: Corpus;
  reward: GoldReward;
  ref: WordLM;
  sft: { heldOutLossBefore: number; heldOutLoss: number; trainLoss: number };
}

/** Load the corpus and pretrain the reference model (next-token training). */
export function buildReference(options: ExperimentOptions, events: ExperimentEvents = {}): ReferenceStage {
  const emit = (r: ExperimentRecord) => events.onRecord?.(r);
  setDefaultThreads(options.threads);
  kernelPool(defaultThreads()); // start the worker threads first

  events.onPhase?.('corpus', 'corpus', 1);
  const corpus = loadCorpus({ vocabWords: options.vocabWords });
  checkPromptSupply(corpus, options);
  const reward = new GoldReward(corpus.vocab);
  const V = corpus.vocab.size;
  const config: ModelConfig = { vocab: V, context: options.context, embed: options.embed, hidden: options.hidden };
  const counts = new Float64Array(V);
  for (const t of corpus.trainStream) counts[t]++;
  const ref = WordLM.init(config, new Rng(deriveSeed(options.seed, 'init')), { unigramCounts: counts });
  const coverage = reward.coverage();
  const { threads: _threads, ...settings } = options; // the thread count changes no number: not recorded
  emit({ kind: 'config', ...settings, vocabSize: V, parameters: ref.parameterCount(), positiveWords: coverage.positive, negativeWords: coverage.negative });
  events.onProgress?.(1, {});

  events.onPhase?.('sft', 'SFT reference', options.sftSteps);
  let smoothed = NaN;
  const sft = pretrain(
    ref,
    corpus,
    { steps: options.sftSteps, batchSize: options.sftBatchSize, lr: options.sftLr, seed: deriveSeed(options.seed, 'sft'), threads: options.threads },
    ({ step, loss }) => {
      smoothed = Number.isNaN(smoothed) ? loss : 0.95 * smoothed + 0.05 * loss;
      if (step % 10 === 0 || step === options.sftSteps) emit({ kind: 'sft', step, loss });
      events.onProgress?.(step, { loss: smoothed });
    },
  );
  emit({ kind: 'reference', ...sft });
  return { options, corpus, reward, ref, sft };
}

/** Prompts from the corpus, and preference pairs sampled from the reference and ranked by the gold reward. */
export function buildPreferenceData(stage: ReferenceStage, events: ExperimentEvents = {}): DpoData {
  const { options, corpus, ref, reward } = stage;
  const promptRng = new Rng(deriveSeed(options.seed, 'prompts'));
  const trainPrompts = samplePrompts(corpus.train, options.trainPrompts, options.promptWords, promptRng);
  const heldOutPrompts = samplePrompts(corpus.heldOut, options.evalPrompts + options.heldOutPairPrompts, options.promptWords, promptRng);
  const sampleRng = new Rng(deriveSeed(options.seed, 'pairs'));
  const heldOutPairPrompts = heldOutPrompts.slice(options.evalPrompts);
  const total = trainPrompts.length + heldOutPairPrompts.length;
  events.onPhase?.('pairs', 'sampling pairs', total);
  const train = buildPairSet(ref, trainPrompts, options.completionLength, reward, sampleRng, options.threads, (done) =>
    events.onProgress?.(done, {}),
  );
  const heldOut = buildPairSet(ref, heldOutPairPrompts, options.completionLength, reward, sampleRng, options.threads, (done) =>
    events.onProgress?.(trainPrompts.length + done, { pairs: train.pairs.length }),
  );
  events.onRecord?.(pairsRecord('train', train));
  events.onRecord?.(pairsRecord('heldOut', heldOut));
  return {
    train,
    heldOut,
    evalPrompts: heldOutPrompts.slice(0, options.evalPrompts),
    promptLength: options.promptWords + 1,
    completionLength: options.completionLength,
    reward,
  };
}

/** The label of a run in the plot, the table and the progress bar. */
export function runLabel(method: Method, setting: number | null): string {
  const name = METHOD_NAMES[method];
  if (method === 'dpo' || method === 'ppo-gt') return `${name} β=${setting}`;
  if (method === 'unlikelihood') return `${name} α=${setting}`;
  return name;
}

/** A few side-by-side continuations of held-out prompts, reference against policy. */
function showSamples(stage: ReferenceStage, data: DpoData, policy: WordLM): MethodRun['samples'] {
  const { options, ref, corpus } = stage;
  const shown = data.evalPrompts.slice(0, 12);
  const refSamples = samplePolicy(ref, ref, shown, data.completionLength, data.reward, deriveSeed(options.seed, 'shown'), options.threads);
  const polSamples = samplePolicy(policy, ref, shown, data.completionLength, data.reward, deriveSeed(options.seed, 'shown'), options.threads);
  return shown.map((p, i) => ({
    prompt: corpus.vocab.decode(p.subarray(1)),
    reference: corpus.vocab.decode(refSamples.sequences[i]!.subarray(p.length)),
    referenceReward: refSamples.rewards[i]!,
    policy: corpus.vocab.decode(polSamples.sequences[i]!.subarray(p.length)),
    policyReward: polSamples.rewards[i]!,
  }));
}

const PAIR_LOSS: Record<Exclude<Method, 'ppo-gt'>, (o: ExperimentOptions) => LossType | LossType[]> = {
  dpo: (o) => o.lossType,
  'preferred-ft': () => 'sft',
  unlikelihood: () => 'unlikelihood',
};

/**
 * One run of a method from the reference: the pair methods (DPO at β = setting, Preferred-FT,
 * Unlikelihood at α = setting) on the same pairs in the same batch order, PPO-GT (KL coefficient
 * = setting) on their prompts with the gold reward; all with the same evaluation draws.
 */
export function runMethod(stage: ReferenceStage, data: DpoData, method: Method, setting: number | null, events: ExperimentEvents = {}): MethodRun {
  const { options, ref } = stage;
  const emit = (r: ExperimentRecord) => events.onRecord?.(r);
  const label = runLabel(method, setting);
  events.onPhase?.('train', label, options.steps);
  let last: { goldReward: number; kl: number } | null = null;
  let lossEma = NaN, accEma = NaN;
  const ema = (prev: number, x: number) => (Number.isNaN(prev) ? x : 0.9 * prev + 0.1 * x);
  const shared = { steps: options.steps, evalEvery: options.evalEvery, seed: deriveSeed(options.seed, 'dpo'), threads: options.threads };
  // An evaluated step is shown with its own evaluation, which onEval reports next.
  const progress = (step: number, evaluated: boolean) => {
    if (!evaluated) events.onProgress?.(step, { loss: lossEma, [method === 'ppo-gt' ? 'sample' : 'acc']: accEma, reward: last?.goldReward ?? NaN, kl: last?.kl ?? NaN });
  };
  const onEvalShown = (e: { step: number; goldReward: number; kl: number }) => {
    last = e;
    if (e.step > 0) events.onProgress?.(e.step, { loss: lossEma, [method === 'ppo-gt' ? 'sample' : 'acc']: accEma, reward: e.goldReward, kl: e.kl });
  };
  if (method === 'ppo-gt') {
    const beta = setting!;
    const result = trainPpo(
      ref,
      data,
      { ...shared, beta, promptsPerStep: (2 * options.batchSize) / options.samplesPerPrompt, samplesPerPrompt: options.samplesPerPrompt, lr: options.ppoLr },
      {
        onStep: (s) => {
          emit({ kind: 'train', method, setting: beta, ...s });
          lossEma = ema(lossEma, s.loss);
          accEma = ema(accEma, s.sampleReward);
          progress(s.step, isEvalStep(s.step, options));
        },
        onEval: (e) => {
          emit({ kind: 'eval', method, setting: beta, ...e });
          onEvalShown(e);
        },
      },
    );
    return { method, setting, label, evals: result.evals, samples: showSamples(stage, data, result.policy) };
  }
  const result = trainDpo(
    ref,
    data,
    { ...shared, beta: method === 'dpo' ? setting! : 0.1, lossType: PAIR_LOSS[method](options), batchSize: options.batchSize, lr: options.lr, unlikelihoodAlpha: method === 'unlikelihood' ? setting! : undefined },
    {
      onStep: (s) => {
        const m = s.metrics;
        emit({
          kind: 'train',
          method,
          setting,
          step: s.step,
          loss: s.loss,
          gradNorm: s.gradNorm,
          accuracy: m['rewards/accuracies'],
          margin: m['rewards/margins'],
          chosenReward: m['rewards/chosen'],
          rejectedReward: m['rewards/rejected'],
        });
        lossEma = ema(lossEma, s.loss);
        accEma = ema(accEma, m['rewards/accuracies']);
        progress(s.step, isEvalStep(s.step, options));
      },
      onEval: (e) => {
        emit({ kind: 'eval', method, setting, ...e });
        onEvalShown(e);
      },
    },
  );
  return { method, setting, label, evals: result.evals, samples: showSamples(stage, data, result.policy) };
}

/** DPO from the reference at one β. */
export function runBeta(stage: ReferenceStage, data: DpoData, beta: number, events: ExperimentEvents = {}): MethodRun {
  return runMethod(stage, data, 'dpo', beta, events);
}

/** Every (method, setting) run the options ask for, in the order of `methods`. */
export function plannedRuns(options: ExperimentOptions): { method: Method; setting: number | null }[] {
  return options.methods.flatMap((method): { method: Method; setting: number | null }[] => {
    if (method === 'dpo') return options.betas.map((setting) => ({ method, setting }));
    if (method === 'ppo-gt') return options.ppoBetas.map((setting) => ({ method, setting }));
    if (method === 'unlikelihood') return [{ method, setting: options.unlikelihoodAlpha }];
    return [{ method, setting: null }];
  });
}

/** Run the whole experiment: corpus, reference model, pairs, and every method's runs. */
export function runExperiment(partial: Partial<ExperimentOptions> = {}, events: ExperimentEvents = {}): ExperimentResult {
  const options = resolveOptions(partial);
  const stage = buildReference(options, events);
  const data = buildPreferenceData(stage, events);
  const runs = plannedRuns(options).map(({ method, setting }) => runMethod(stage, data, method, setting, events));
  return {
    options,
    vocabSize: stage.corpus.vocab.size,
    reference: { heldOutLoss: stage.sft.heldOutLoss, goldReward: runs[0]!.evals[0]!.goldReward },
    pairs: { train: data.train.pairs.length, heldOut: data.heldOut.pairs.length },
    runs,
  };
}
