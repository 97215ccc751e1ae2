// The minimal training loop on fused-dpo, and DPO's controlled-sentiment demo built on it.
//
//   runDemo(options)        the whole demo, writing runs/<name>/ (what `fused-dpo train` runs)
//   runExperiment(options)  the same without files: reference, pairs, one DPO run per β
//   trainDpo(ref, data, o)  the DPO loop on any WordLM and pair set, with step/eval callbacks
//   pretrain(model, corpus) next-token training
export { runDemo, finalNumbers, frontierOf, RunExistsError } from './demo.js';
export type { DemoOptions, DemoResult, FinalNumbers } from './demo.js';
export {
  buildPreferenceData,
  buildReference,
  DEFAULT_OPTIONS,
  EXPERIMENT_OPTION_KEYS,
  OPTION_RULES,
  resolveOptions,
  runBeta,
  runExperiment,
  TINY_OPTIONS,
} from './experiment.js';
export type {
  BetaResult,
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
export { isEvalStep, pairMetrics, samplePolicy, trainDpo } from './dpo.js';
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
export { frontierSvg, niceTicks } from './plot.js';
export type { FrontierPlotOptions, FrontierSeries } from './plot.js';
export { ProgressBar } from './progress.js';
export type { ProgressBarOptions } from './progress.js';
export { defaultThreads, KernelPool, kernelPool, setDefaultThreads, sharedFloats } from './pool.js';
export { deriveSeed, Rng } from './rng.js';
