// The minimal training loop on fused-dpo, and DPO's controlled-sentiment demo built on it.
//
//   runDemo(options)        the whole demo, writing runs/<name>/ (what `fused-dpo train` runs)
//   runExperiment(options)  the same without files: reference, pairs, every method's runs
//   trainDpo(ref, data, o)  the pair-loss loop (DPO, Preferred-FT, Unlikelihood) on any WordLM and pair set
//   trainPpo(ref, data, o)  PPO-GT: on-policy samples, gold reward, group baseline, policyLoss
//   pretrain(model, corpus) next-token training
export { runDemo, finalNumbers, frontierOf, frontiersOf, RunExistsError } from './demo.js';
export type { DemoOptions, DemoResult, FinalNumbers, MethodFrontier } from './demo.js';
export {
  buildPreferenceData,
  buildReference,
  DEFAULT_OPTIONS,
  EXPERIMENT_OPTION_KEYS,
  METHOD_NAMES,
  METHODS,
  OPTION_RULES,
  plannedRuns,
  resolveOptions,
  runBeta,
  runExperiment,
  runLabel,
  runMethod,
  TINY_OPTIONS,
} from './experiment.js';
export type {
  Method,
  MethodRun,
  ExperimentEvents,
  ExperimentOptions,
  ExperimentPhase,
  ExperimentRecord,
  ExperimentResult,
  OptionRule,
  ReferenceStage,
} from './experiment.js';
export { refuseUnknownKeys, TrainOptionError, UnknownOptionError } from './options.js';
export { absentDemoPackages, DEMO_PACKAGES, DemoPackageError } from './peers.js';
export { evaluatePolicy, isEvalStep, pairMetrics, samplePolicy, trainDpo } from './dpo.js';
export { groupAdvantages, trainPpo } from './ppo.js';
export type { PpoCallbacks, PpoEvalRecord, PpoOptions, PpoStepRecord } from './ppo.js';
export type { DpoCallbacks, DpoData, DpoEvalRecord, DpoOptions, DpoResult, DpoStepRecord, PairMetrics, PolicySamples } from './dpo.js';
export { heldOutLoss, pretrain } from './sft.js';
export type { SftOptions, SftResult, SftStep } from './sft.js';
export { Adam, PARAM_NAMES, sampleContinuations, Workspace, WordLM, writeContext, zeroParams } from './model.js';
export type { AdamOptions, FloatArray, InitOptions, ModelConfig, ParamName, Params, Precision, SampleOptions } from './model.js';
export { buildPairSet, IGNORE_INDEX, PairBatch, referenceLogps, samplePairs } from './pairs.js';
export type { PairSet, PreferencePair } from './pairs.js';
export { BOS, brownDirectory, buildVocabulary, loadBrown, loadCorpus, parseBrownFile, promptReadySentences, samplePrompts, stripTag, UNK, Vocabulary } from './data.js';
export type { BrownDocument, Corpus, CorpusOptions } from './data.js';
export { GoldReward } from './reward.js';
export { frontierSvg, methodsFrontierSvg, niceTicks, paretoFrontier } from './plot.js';
export type { FrontierPlotOptions, FrontierPoint, FrontierSeries, MethodSeries } from './plot.js';
export { ProgressBar } from './progress.js';
export type { ProgressBarOptions } from './progress.js';
export { defaultThreads, KernelPool, kernelPool, setDefaultThreads, sharedFloats } from './pool.js';
export { deriveSeed, Rng } from './rng.js';
