// The peers bench/bench.ts compares fused-dpo against. Each module imports its dependency
// (installed in bench/node_modules by `cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm ci`) with a
// dynamic import inside setup(), so a missing dependency is a setup error of that peer only.
import { onnxRuntime } from './onnx.js';
import { tfjsCpu, tfjsWasm } from './tfjs.js';
import type { Peer } from './types.js';

export type { Peer, PeerInputs, PeerRun } from './types.js';

export const PEERS: Peer[] = [tfjsCpu, tfjsWasm, onnxRuntime];
