export { dpoLoss, dpoLossAsync, sequenceLogps, sequenceLogpsAsync } from './loss.js';
export { ktoLoss, ktoLossAsync } from './kto.js';
export type { DeviceKtoLossOptions, KtoKlLogits, KtoKlLogps, KtoLossOptions, KtoLossResult, KtoMetrics, KtoSettingsOptions } from './kto.js';
export { policyLoss, policyLossAsync } from './policy.js';
export type { DevicePolicyLossOptions, PolicyLossOptions, PolicyLossResult, PolicyLossType, PolicyMetrics, PolicySettingsOptions } from './policy.js';
export type {
  DeviceDpoLossOptions,
  DpoLossOptions,
  DpoLossResult,
  LossSettingsOptions,
  SequenceLogpsOptions,
  SequenceLogpsResult,
} from './loss.js';
export type { DeviceTokenOptions, TokenOptions, TokenSettings } from './validate.js';
export { backendInfo, setSimdLevel } from './backend.js';
export type { BackendInfo, BackendName, CudaDeviceInfo } from './backend.js';
export { DeviceTensor } from './device.js';
export type { DeviceDType, DeviceOptions } from './device.js';
export { toBfloat16, fromBfloat16, toFloat16, fromFloat16 } from './dtype.js';
export { HYPERPARAMETERS, KTO_HYPERPARAMETERS, KTO_LOSS_TYPES, LOSS_DEFAULTS, LOSS_KINDS, LOSS_TYPES } from './loss-kinds.js';
export type { KtoLossType } from './loss-kinds.js';
export type { Hyperparameter, HyperparameterName, LossKind, LossType } from './loss-kinds.js';
export type { NonFiniteRow } from './non-finite.js';
export type { DType, Tensor, LabelTensor, DpoMetrics } from './types.js';
export type { FusedDpoError, FusedDpoErrorCode } from './errors.js';
