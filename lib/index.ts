export { dpoLoss, dpoLossAsync, sequenceLogps, sequenceLogpsAsync } from './loss.js';
export type { DpoLossOptions, DpoLossResult, SequenceLogpsOptions, SequenceLogpsResult } from './loss.js';
export { backendInfo, setSimdLevel } from './backend.js';
export type { BackendInfo } from './backend.js';
export { toBfloat16, fromBfloat16, toFloat16, fromFloat16 } from './dtype.js';
export { LOSS_TYPES } from './types.js';
export type { DType, Tensor, LabelTensor, LossType, DpoMetrics } from './types.js';
export type { FusedDpoError, FusedDpoErrorCode } from './errors.js';
