// DPO's controlled-sentiment experiment (Rafailov et al. 2023, §6.1), laptop-sized: a word-level
// model pretrained on the Brown corpus is the reference; continuations it samples for corpus
// prompts are ranked by the AFINN sentiment of their words; DPO trains a policy on those
// preferences for each β, and the policy's gold reward is traced against its KL to the reference.
import { LOSS_TYPES, type LossType } from '../loss-kinds.js';
import { loadCorpus, promptReadySentences, samplePrompts, type Corpus } from './data.js';
import { isEvalStep, samplePolicy, trainDpo, type DpoData, type DpoEvalRecord, type DpoStepRecord } from './dpo.js';
import { WordLM, type ModelConfig } from './model.js';
import { buildPairSet, type PairSet } from './pairs.js';
import { defaultThreads, kernelPool, setDefaultThreads } from './pool.js';
import { refuseUnknownKeys, TrainOptionError } from './options.js';
import { GoldReward } from './reward.js';
import { deriveSeed, Rng } from './rng.js';
import { pretrain } from './sft.js';

export interface ExperimentOptions {
  /** One DPO run per β. */
  betas: number[];
  /** fused-dpo loss type(s). */
  lossType: LossType | LossType[];
  /** DPO steps per β, pairs per step, Adam learning rate, steps between evaluations. */
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
  betas: [0.1, 0.5, 2],
  lossType: 'sigmoid',
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
  | ({ kind: 'train'; beta: number } & Omit<DpoStepRecord, 'metrics'> & { accuracy: number; margin: number; chosenReward: number; rejectedReward: number })
  | ({ kind: 'eval'; beta: number } & DpoEvalRecord);

export type ExperimentPhase = 'corpus' | 'sft' | 'pairs' | 'dpo';

export interface ExperimentEvents {
  /** Every metrics record, in order (the run's JSON lines). */
  onRecord?(record: ExperimentRecord): void;
  /** A phase starts: its label and how many units of work it has. */
  onPhase?(phase: ExperimentPhase, label: string, total: number): void;
  /** Progress inside the current phase, with live metrics to show. */
  onProgress?(done: number, fields: Record<string, number>): void;
}

export interface BetaResult {
  beta: number;
  evals: DpoEvalRecord[];
  /** Final policy samples for a few held-out prompts (decoded), with their gold rewards. */
  samples: { prompt: string; reference: string; referenceReward: number; policy: string; policyReward: number }[];
}

export interface ExperimentResult {
  options: ExperimentOptions;
  vocabSize: number;
  reference: { heldOutLoss: number; goldReward: number };
  pairs: { train: number; heldOut: number };
  runs: BetaResult[];
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
export const OPTION_RULES: { readonly [K in keyof ExperimentOptions]-?: OptionRule } = {
  betas: { expected: 'one or more positive numbers', ok: (v) => Array.isArray(v) && v.length > 0 && v.every((b) => positiveNumber.ok(b)) },
  lossType: {
    expected: `a loss type or a list of them (${LOSS_TYPES.join(', ')})`,
    ok: (v) => (Array.isArray(v) ? v.length > 0 && v.every(isLossType) : isLossType(v)),
  },
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

/** DPO from the reference at one β; every β gets the same pairs, batch order and evaluation draws. */
export function runBeta(stage: ReferenceStage, data: DpoData, beta: number, events: ExperimentEvents = {}): BetaResult {
  const { options, ref, corpus } = stage;
  const emit = (r: ExperimentRecord) => events.onRecord?.(r);
  events.onPhase?.('dpo', `DPO β=${beta}`, options.steps);
  let last: DpoEvalRecord | null = null;
  let lossEma = NaN, accEma = NaN;
  const dpoOptions = { beta, lossType: options.lossType, steps: options.steps, batchSize: options.batchSize, lr: options.lr, evalEvery: options.evalEvery, seed: deriveSeed(options.seed, 'dpo'), threads: options.threads };
  const result = trainDpo(
    ref,
    data,
    dpoOptions,
    {
      onStep: (s) => {
        const m = s.metrics;
        emit({
          kind: 'train',
          beta,
          step: s.step,
          loss: s.loss,
          gradNorm: s.gradNorm,
          accuracy: m['rewards/accuracies'],
          margin: m['rewards/margins'],
          chosenReward: m['rewards/chosen'],
          rejectedReward: m['rewards/rejected'],
        });
        lossEma = Number.isNaN(lossEma) ? s.loss : 0.9 * lossEma + 0.1 * s.loss;
        accEma = Number.isNaN(accEma) ? m['rewards/accuracies'] : 0.9 * accEma + 0.1 * m['rewards/accuracies'];
        // An evaluated step is shown with its own evaluation, which onEval reports next.
        if (!isEvalStep(s.step, dpoOptions)) events.onProgress?.(s.step, { loss: lossEma, acc: accEma, reward: last?.goldReward ?? NaN, kl: last?.kl ?? NaN });
      },
      onEval: (e) => {
        last = e;
        emit({ kind: 'eval', beta, ...e });
        if (e.step > 0) events.onProgress?.(e.step, { loss: lossEma, acc: accEma, reward: e.goldReward, kl: e.kl });
      },
    },
  );
  // a few side-by-side continuations for the run's folder
  const shown = data.evalPrompts.slice(0, 12);
  const refSamples = samplePolicy(ref, ref, shown, data.completionLength, data.reward, deriveSeed(options.seed, 'shown'), options.threads);
  const polSamples = samplePolicy(result.policy, ref, shown, data.completionLength, data.reward, deriveSeed(options.seed, 'shown'), options.threads);
  return {
    beta,
    evals: result.evals,
    samples: shown.map((p, i) => ({
      prompt: corpus.vocab.decode(p.subarray(1)),
      reference: corpus.vocab.decode(refSamples.sequences[i]!.subarray(p.length)),
      referenceReward: refSamples.rewards[i]!,
      policy: corpus.vocab.decode(polSamples.sequences[i]!.subarray(p.length)),
      policyReward: polSamples.rewards[i]!,
    })),
  };
}

/** Run the whole experiment: corpus, reference model, pairs, and DPO for every β. */
export function runExperiment(partial: Partial<ExperimentOptions> = {}, events: ExperimentEvents = {}): ExperimentResult {
  const options = resolveOptions(partial);
  const stage = buildReference(options, events);
  const data = buildPreferenceData(stage, events);
  const runs = options.betas.map((beta) => runBeta(stage, data, beta, events));
  return {
    options,
    vocabSize: stage.corpus.vocab.size,
    reference: { heldOutLoss: stage.sft.heldOutLoss, goldReward: runs[0]!.evals[0]!.goldReward },
    pairs: { train: data.train.pairs.length, heldOut: data.heldOut.pairs.length },
    runs,
  };
}
