// The training loop (lib/train): corpus loading on the real Brown corpus, the gold reward, the
// model's hand-written backward against finite differences, the batch layout fused-dpo reads, and
// a short DPO run that has to learn the preferences and raise the gold reward.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss } from '../lib/index.js';
import {
  Adam,
  BOS,
  buildPreferenceData,
  buildReference,
  frontierSvg,
  GoldReward,
  groupAdvantages,
  methodsFrontierSvg,
  paretoFrontier,
  trainPpo,
  IGNORE_INDEX,
  KernelPool,
  loadBrown,
  loadCorpus,
  PairBatch,
  parseBrownFile,
  PARAM_NAMES,
  pretrain,
  ProgressBar,
  resolveOptions,
  Rng,
  runBeta,
  runDemo,
  sampleContinuations,
  samplePrompts,
  TINY_OPTIONS,
  TrainOptionError,
  trainDpo,
  UNK,
  UnknownOptionError,
  Vocabulary,
  Workspace,
  WordLM,
  zeroParams,
  type DpoData,
  type DpoOptions,
  type ExperimentOptions,
  type FloatArray,
  type ModelConfig,
  type Params,
  type PreferencePair,
  type ReferenceStage,
} from '../lib/train/index.js';

// ---------------------------------------------------------------------------------------------
// data

test('data: Brown tags are stripped, words lower-cased, quote marks unified', () => {
  const text = "\n\n\tThe/at Fulton/np-tl County/nn-tl said/vbd ``/`` no/at evidence/nn ''/'' ./.\n\n\n\tAtlanta's/np$ and/or/cc 1961/cd ./.\n";
  assert.equal(parseBrownFile(text), [
    ['the', 'fulton', 'county', 'said', '"', 'no', 'evidence', '"', '.'],
    ["atlanta's", 'and/or', '1961', '.'],
  ]);
});

test('data: the real corpus loads whole (500 documents, 57,340 sentences, 1,161,192 tokens)', () => {
  const docs = loadBrown();
  assert.is(docs.length, 500);
  assert.is(docs[0]!.id, 'ca01');
  assert.is(docs[499]!.id, 'cr09');
  assert.equal([...new Set(docs.map((d) => d.category))].join(''), 'abcdefghjklmnpr');
  let sentences = 0, tokens = 0, tagged = 0;
  for (const d of docs) {
    sentences += d.sentences.length;
    for (const s of d.sentences) {
      tokens += s.length;
      for (const w of s) if (/\/(at|nn|np|vbd|in|jj|cc|cd|nns|rb)(-tl|-hl)?$/.test(w)) tagged++;
    }
  }
  assert.is(sentences, 57340);
  assert.is(tokens, 1161192);
  assert.is(tagged, 0, 'no part-of-speech tags left on words');
  assert.equal(docs[0]!.sentences[0]!.slice(0, 8), ['the', 'fulton', 'county', 'grand', 'jury', 'said', 'friday', 'an']);
});

test('data: vocabulary, split and encoding', () => {
  const corpus = loadCorpus({ vocabWords: 2000 });
  const { vocab } = corpus;
  assert.is(vocab.size, 2002);
  assert.equal(vocab.words.slice(0, 6), ['<unk>', '<s>', 'the', ',', '.', 'of']);
  assert.is(vocab.id('the'), 2);
  assert.is(vocab.id('floccinaucinihilipilification'), UNK);
  // every 10th document is held out: 50 of them, none in the training sentences
  assert.is(corpus.heldOutDocs.length, 50);
  assert.ok(corpus.heldOutDocs.every((id) => /^c[a-r]\d\d$/.test(id)));
  const trainTokens = corpus.train.reduce((n, s) => n + s.length, 0);
  const heldTokens = corpus.heldOut.reduce((n, s) => n + s.length, 0);
  assert.is(trainTokens + heldTokens, 1161192);
  assert.is(corpus.trainStream.length, trainTokens + corpus.train.length);
  assert.is(corpus.trainStream[0], BOS);
  // the most frequent 2000 words cover most running text
  let unk = 0;
  for (const t of corpus.trainStream) if (t === UNK) unk++;
  const unkRate = unk / trainTokens;
  assert.ok(unkRate > 0.1 && unkRate < 0.3, `unknown-word rate ${unkRate}`);
  // the first training sentence round-trips (up to out-of-vocabulary words)
  assert.is(vocab.decode(corpus.train[0]!.subarray(0, 6)), 'the <unk> county <unk> jury said');
  // prompts: BOS + known words, distinct sentences, seeded
  const a = samplePrompts(corpus.heldOut, 50, 3, new Rng(7));
  const b = samplePrompts(corpus.heldOut, 50, 3, new Rng(7));
  assert.equal(a.map((p) => [...p]), b.map((p) => [...p]));
  for (const p of a) {
    assert.is(p.length, 4);
    assert.is(p[0], BOS);
    assert.ok(!p.subarray(1).includes(UNK));
  }
});

test('reward: AFINN valences summed over the continuation', () => {
  const vocab = new Vocabulary(['<unk>', '<s>', 'good', 'bad', 'the', 'love', 'hate', 'table']);
  const reward = new GoldReward(vocab);
  assert.is(reward.valence[vocab.id('good')], 3);
  assert.is(reward.valence[vocab.id('bad')], -3);
  assert.is(reward.valence[vocab.id('table')], 0);
  assert.is(reward.valence[UNK], 0);
  assert.is(reward.score(vocab.encode(['the', 'good', 'good', 'table', 'hate'])), 3 + 3 - 3);
  assert.is(reward.score(vocab.encode(['love', 'bad', 'good']), 1), 0, 'from index 1');
  assert.equal(reward.coverage(), { positive: 2, negative: 2 });
  // constructor, toString etc. are not AFINN words
  assert.is(new GoldReward(new Vocabulary(['constructor', 'tostring', 'hasownproperty'])).score([0, 1, 2]), 0);
});

// ---------------------------------------------------------------------------------------------
// model

// sizes that exercise the blocked loops and their remainders (8- and 4-wide blocks)
const SMALL: ModelConfig = { vocab: 11, context: 3, embed: 3, hidden: 10 };

function randomModel(config: ModelConfig, seed: number, precision: 'float32' | 'float64'): WordLM {
  const model = WordLM.init(config, new Rng(seed), { precision });
  const rng = new Rng(seed + 1);
  for (const name of PARAM_NAMES) {
    const p = model.params[name];
    for (let i = 0; i < p.length; i++) p[i] = 0.8 * rng.normal();
  }
  return model;
}

function randomContexts(n: number, config: ModelConfig, rng: Rng): Int32Array {
  return Int32Array.from({ length: n * config.context }, () => rng.int(config.vocab));
}

test('model: backward matches finite differences of every parameter (float64)', () => {
  const pool = new KernelPool(1);
  const config = SMALL;
  const model = randomModel(config, 3, 'float64');
  const rng = new Rng(11);
  const N = 7; // 4-row block + 3 single rows
  const R = 12; // rows of the logits buffer; the model writes 7 of them, out of order
  const rows = Int32Array.of(5, 0, 11, 3, 8, 1, 6);
  const contexts = randomContexts(N, config, rng);
  const upstream = Float64Array.from({ length: R * config.vocab }, () => rng.normal());
  const ws = new Workspace(config, 'float64', N, pool);
  const logits = new Float64Array(R * config.vocab);
  // L = Σ upstream·logits over the written rows: ∂L/∂logits = upstream
  const loss = () => {
    logits.fill(0);
    model.forward(ws, contexts, N, logits, rows);
    let sum = 0;
    for (const r of rows) for (let v = 0; v < config.vocab; v++) sum += upstream[r * config.vocab + v]! * logits[r * config.vocab + v]!;
    return sum;
  };
  loss();
  const grads = model.zeros();
  model.backward(ws, contexts, N, upstream, rows, grads);
  const eps = 1e-6;
  for (const name of PARAM_NAMES) {
    const p = model.params[name];
    let worst = 0;
    for (let i = 0; i < p.length; i++) {
      const keep = p[i]!;
      p[i] = keep + eps;
      const up = loss();
      p[i] = keep - eps;
      const down = loss();
      p[i] = keep;
      const fd = (up - down) / (2 * eps);
      const err = Math.abs(fd - grads[name][i]!) / Math.max(1, Math.abs(fd));
      worst = Math.max(worst, err);
    }
    assert.ok(worst < 1e-6, `${name}: worst relative error ${worst}`);
  }
  pool.close();
});

test('model: the DPO chain (model → fused-dpo → backward) matches a finite-difference directional derivative', () => {
  const config = SMALL;
  const model = randomModel(config, 5, 'float64');
  const rng = new Rng(12);
  const P = 3, K = 4, B = 3;
  const pair = (): PreferencePair => ({
    prompt: Int32Array.of(BOS, rng.int(config.vocab), rng.int(config.vocab)),
    chosen: Int32Array.from({ length: K }, () => rng.int(config.vocab)),
    rejected: Int32Array.from({ length: K }, () => rng.int(config.vocab)),
    chosenReward: 1,
    rejectedReward: 0,
  });
  const pairs = [pair(), pair(), pair()];
  const batch = new PairBatch(B, P, K, config);
  batch.fill(pairs, [0, 1, 2]);
  const ws = new Workspace(config, 'float64', 2 * B * K);
  const shared64 = new Float64Array(batch.logits.length);
  const ref = { chosen: [-9, -10, -8], rejected: [-10, -9, -11] };
  const run = (grad: boolean) => {
    shared64.fill(0);
    model.forward(ws, batch.contexts, batch.positions, shared64, batch.rows);
    batch.logits.set(shared64);
    const { logits, labels, grad: g } = batch.tensors();
    return dpoLoss({ logits, labels, ref, beta: 0.7, grad: grad ? g : false });
  };
  run(true);
  const grads = model.zeros();
  const g64 = Float64Array.from(batch.grad);
  model.backward(ws, batch.contexts, batch.positions, g64, batch.rows, grads);
  // direction u: random over all parameters
  const dir: Record<string, Float64Array> = {};
  let analytic = 0;
  for (const name of PARAM_NAMES) {
    dir[name] = Float64Array.from({ length: model.params[name].length }, () => rng.normal());
    for (let i = 0; i < dir[name]!.length; i++) analytic += dir[name]![i]! * grads[name][i]!;
  }
  const shift = (scale: number) => {
    for (const name of PARAM_NAMES) for (let i = 0; i < dir[name]!.length; i++) model.params[name][i] += scale * dir[name]![i]!;
  };
  const eps = 1e-3;
  shift(eps);
  const up = run(false).loss;
  shift(-2 * eps);
  const down = run(false).loss;
  shift(eps);
  const numeric = (up - down) / (2 * eps);
  assert.ok(Math.abs(analytic) > 1e-3, `a non-trivial gradient (${analytic})`);
  assert.ok(Math.abs(numeric - analytic) <= 2e-3 * Math.max(1, Math.abs(analytic)), `directional derivative: finite differences ${numeric}, backward ${analytic}`);
});

test('model: products are bit-identical on 1 and 3 threads', () => {
  const config: ModelConfig = { vocab: 700, context: 3, embed: 8, hidden: 24 };
  const run = (threads: number) => {
    const pool = new KernelPool(threads);
    const model = randomModel(config, 9, 'float32');
    const rng = new Rng(4);
    const N = 45;
    const contexts = randomContexts(N, config, rng);
    const ws = new Workspace(config, 'float32', N, pool);
    const logits = new Float32Array(new SharedArrayBuffer(N * config.vocab * 4));
    model.forward(ws, contexts, N, logits, null);
    const g = new Float32Array(new SharedArrayBuffer(N * config.vocab * 4));
    for (let i = 0; i < g.length; i++) g[i] = Math.sin(i) * 0.01;
    const grads = model.zeros();
    model.backward(ws, contexts, N, g, null, grads);
    pool.close();
    return { logits: [...logits], grads: PARAM_NAMES.map((n) => [...grads[n]]) };
  };
  const one = run(1), three = run(3);
  assert.equal(three.logits, one.logits);
  assert.equal(three.grads, one.grads);
});

test('batch: padded [2B, T, V] layout, labels on the continuation rows only', () => {
  const config: ModelConfig = { vocab: 20, context: 2, embed: 2, hidden: 8 };
  const P = 3, K = 2;
  const pairs: PreferencePair[] = [
    { prompt: Int32Array.of(BOS, 5, 6), chosen: Int32Array.of(7, 8), rejected: Int32Array.of(9, 10), chosenReward: 1, rejectedReward: 0 },
    { prompt: Int32Array.of(BOS, 11, 12), chosen: Int32Array.of(13, 14), rejected: Int32Array.of(15, 16), chosenReward: 2, rejectedReward: 0 },
  ];
  const batch = new PairBatch(4, P, K, config);
  batch.fill(pairs, [1, 0]);
  assert.is(batch.pairs, 2);
  assert.is(batch.T, 5);
  const I = IGNORE_INDEX;
  // sequences: chosen of pair 1, chosen of pair 0, rejected of pair 1, rejected of pair 0
  assert.equal([...batch.labels.subarray(0, 4 * 5)], [I, I, 13, 14, I, I, I, 7, 8, I, I, I, 15, 16, I, I, I, 9, 10, I]);
  assert.equal([...batch.rows.subarray(0, 8)], [2, 3, 7, 8, 12, 13, 17, 18]);
  // the context of row 2 (predicting 13) is the two tokens before it: 11, 12
  assert.equal([...batch.contexts.subarray(0, 4)], [11, 12, 12, 13]);
  const t = batch.tensors();
  assert.equal(t.logits.shape, [4, 5, 20]);
  assert.equal(t.labels.shape, [4, 5]);
});

// ---------------------------------------------------------------------------------------------
// the loop

// the tiny experiment's reference and pairs, built once for the tests below
let tinyStage: { options: ExperimentOptions; stage: ReferenceStage; data: DpoData } | undefined;
function tiny() {
  if (!tinyStage) {
    const options = resolveOptions(TINY_OPTIONS);
    const stage = buildReference(options);
    tinyStage = { options, stage, data: buildPreferenceData(stage) };
  }
  return tinyStage;
}

test('dpo: a short run learns the preferences and raises the gold reward over the reference', () => {
  const { options, stage, data } = tiny();
  // the reference learned something: held-out next-token loss fell
  assert.ok(stage.sft.heldOutLoss < stage.sft.heldOutLossBefore - 0.1, JSON.stringify(stage.sft));
  assert.ok(data.train.pairs.length > 400, `${data.train.pairs.length} training pairs`);
  for (const p of data.train.pairs) assert.ok(p.chosenReward > p.rejectedReward);
  const result = runBeta(stage, data, options.betas[0]!);
  const first = result.evals[0]!;
  const last = result.evals[result.evals.length - 1]!;
  assert.is(first.step, 0);
  assert.is(first.kl, 0, 'the policy starts as the reference');
  assert.is(last.step, options.steps);
  assert.ok('heldOut' in last, 'a DPO run has held-out pair metrics');
  const accuracy = last.train!.accuracy;
  assert.ok(accuracy >= 0.65, `reward accuracy on the training pairs ${accuracy} (chance: 0.5)`);
  assert.ok(last.goldReward >= first.goldReward + 0.4, `gold reward ${first.goldReward} → ${last.goldReward}`);
  assert.ok(last.kl > 0.2, `KL to the reference ${last.kl}`);
});

test('dpo: same seed, same numbers', () => {
  const { stage, data } = tiny();
  const run = () => {
    const records: unknown[] = [];
    trainDpo(stage.ref, data, { beta: 0.3, steps: 6, batchSize: 8, lr: 3e-3, evalEvery: 3, seed: 5 }, {
      onStep: (r) => records.push(r),
      onEval: (r) => records.push(r),
    });
    return JSON.stringify(records);
  };
  const a = run();
  assert.ok(a.includes('"step":6'));
  assert.is(run(), a);
});

test('ppo: the advantage is the reward less its group\'s mean', () => {
  assert.equal(Array.from(groupAdvantages([1, 3, 0, 0, -2, 4], 2)), [-1, 1, 0, 0, -3, 3]);
  assert.equal(Array.from(groupAdvantages([1, 2, 6], 3)), [-2, -1, 3]);
});

test('ppo: a short PPO-GT run raises the gold reward over the reference; same seed, same numbers', () => {
  const { stage, data } = tiny();
  const options = { beta: 0.01, steps: 24, promptsPerStep: 8, samplesPerPrompt: 4, lr: 2e-2, evalEvery: 12, seed: 3 };
  const result = trainPpo(stage.ref, data, options);
  const first = result.evals[0]!, last = result.evals[result.evals.length - 1]!;
  assert.equal(result.evals.map((e) => e.step), [0, 12, 24]);
  assert.is(first.kl, 0, 'the policy starts as the reference');
  assert.ok(last.goldReward >= first.goldReward + 1, `gold reward ${first.goldReward} → ${last.goldReward}`);
  assert.ok(last.kl > 0.05, `KL to the reference ${last.kl}`);
  const records = () => {
    const out: string[] = [];
    trainPpo(stage.ref, data, { ...options, steps: 3, evalEvery: 3 }, { onStep: (r) => out.push(JSON.stringify(r)), onEval: (r) => out.push(JSON.stringify(r)) });
    return out;
  };
  const a = records();
  assert.ok(a.length === 5 && a[3]!.includes('"step":3'));
  assert.equal(records(), a, 'bit for bit');
});

test('plot: the frontier keeps the points no other beats on both KL and reward', () => {
  const pts = [
    { kl: 0, reward: 0.1, step: 0 },
    { kl: 1, reward: 0.05, step: 1 },
    { kl: 0.5, reward: 0.6, step: 2 },
    { kl: 2, reward: 0.6, step: 3 },
    { kl: 3, reward: 1.5, step: 4 },
    { kl: 3, reward: 1.2, step: 5 },
    { kl: NaN, reward: 9, step: 6 },
  ];
  assert.equal(paretoFrontier(pts).map((p) => p.step), [0, 2, 4]);
  assert.equal(paretoFrontier([]), []);
});

test('plot: the methods figure gives each method one colour, a dot per checkpoint and its frontier', () => {
  const run = (label: string, d: number) => ({ label, points: [{ kl: 0, reward: 0.1, step: 0 }, { kl: 1 + d, reward: 0.5 + d, step: 5 }, { kl: 2 + d, reward: 0.4, step: 10 }] });
  const svg = methodsFrontierSvg(
    [
      { label: 'DPO', runs: [run('DPO β=0.1', 0), run('DPO β=1', 0.5)] },
      { label: 'PPO-GT & co', runs: [run('PPO-GT β=0.1', 0.2)] },
    ],
    { title: 'T', referenceReward: 0.1 },
  );
  assert.is(svg.match(/<circle cx=/g)?.length, 9 + 2, 'nine checkpoints and two legend dots');
  const fills = new Set([...svg.matchAll(/<g fill="(#[0-9A-F]{6})"/g)].map((m) => m[1]));
  assert.is(fills.size, 2, 'one colour per method');
  // per method: a faint line per run and its frontier (DPO: 0.1 → 0.5 → 1.0)
  assert.is(svg.match(/stroke-width="2.5" stroke-linejoin/g)?.length, 2);
  assert.ok(svg.includes('PPO-GT &amp; co'));
  assert.not.match(svg, /NaN|undefined|Infinity/);
  const opened = (svg.match(/<(g|svg|text|circle)\b[^>]*[^/]>/g) ?? []).length;
  const closed = (svg.match(/<\/(g|svg|text|circle)>/g) ?? []).length;
  assert.is(opened, closed, 'tags balance');
});

test('plot: one line per series, reference line, escaped labels', () => {
  const svg = frontierSvg(
    [
      { label: 'β = 0.1', points: [{ kl: 0, reward: 0.2, step: 0 }, { kl: 1.5, reward: 1.1, step: 10 }] },
      { label: 'a < b & c', points: [{ kl: 0, reward: 0.2, step: 0 }, { kl: -0.01, reward: 0.3, step: 10 }] },
    ],
    { title: 'T', referenceReward: 0.2 },
  );
  assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  assert.ok(svg.trimEnd().endsWith('</svg>'));
  assert.is(svg.match(/<polyline /g)?.length, 2);
  assert.ok(svg.includes('a &lt; b &amp; c'));
  assert.ok(svg.includes('stroke-dasharray'));
  assert.not.match(svg, /NaN|undefined|Infinity/);
  const opened = (svg.match(/<(g|svg|text|circle)\b[^>]*[^/]>/g) ?? []).length;
  const closed = (svg.match(/<\/(g|svg|text|circle)>/g) ?? []).length;
  assert.is(opened, closed, 'tags balance');
});

// ---------------------------------------------------------------------------------------------
// options

function refused(call: () => unknown, option: string, suggestion: string | null): void {
  try {
    call();
  } catch (error) {
    assert.instance(error, UnknownOptionError);
    const e = error as UnknownOptionError;
    assert.is(e.code, 'ERR_FDPO_UNKNOWN_OPTION');
    assert.is(e.option, option);
    assert.is(e.suggestion, suggestion);
    assert.ok(e.message.includes(`no option "${option}"`), e.message);
    if (suggestion) assert.ok(e.message.includes(`did you mean "${suggestion}"?`), e.message);
    return;
  }
  assert.unreachable(`the unknown option ${option} was accepted`);
}

test('options: every options object of the training library refuses a key it does not know, naming it and the one it resembles', () => {
  const config: ModelConfig = { vocab: 5, context: 1, embed: 1, hidden: 1 };
  const model = WordLM.init(config, new Rng(1));
  const ws = new Workspace(config, 'float32', 4);
  const dpo = { beta: 0.1, steps: 1, batchSize: 1, lr: 1e-3, evalEvery: 1, seed: 1 };
  const { stage, data } = tiny();
  refused(() => resolveOptions({ batch_size: 8 } as Partial<ExperimentOptions>), 'batch_size', 'batchSize');
  refused(() => resolveOptions({ stpes: 8 } as Partial<ExperimentOptions>), 'stpes', 'steps');
  refused(() => runDemo({ tiny: true, nmae: 'x' } as Parameters<typeof runDemo>[0]), 'nmae', 'name');
  refused(() => trainDpo(stage.ref, data, { ...dpo, betaa: 5 } as DpoOptions), 'betaa', 'beta');
  refused(() => trainDpo(stage.ref, data, { ...dpo, loss_type: 'ipo' } as DpoOptions), 'loss_type', 'lossType');
  const ppo = { beta: 0.1, steps: 1, promptsPerStep: 2, samplesPerPrompt: 2, lr: 1e-3, evalEvery: 1, seed: 1 };
  refused(() => trainPpo(stage.ref, data, { ...ppo, epsilonn: 0.1 } as Parameters<typeof trainPpo>[2]), 'epsilonn', 'epsilon');
  refused(() => methodsFrontierSvg([], { subTitle: 'x' } as Parameters<typeof methodsFrontierSvg>[1]), 'subTitle', 'subtitle');
  refused(() => pretrain(model, stage.corpus, { steps: 1, batchSize: 1, lr: 1, seed: 1, eval_tokens: 5 } as Parameters<typeof pretrain>[2]), 'eval_tokens', 'evalTokens');
  refused(() => new Adam(model, { lr: 1, clip_norm: 1 } as ConstructorParameters<typeof Adam>[1]), 'clip_norm', 'clipNorm');
  refused(() => WordLM.init(config, new Rng(1), { dtype: 'float64' } as Parameters<typeof WordLM.init>[2]), 'dtype', null);
  refused(() => sampleContinuations(model, ws, [Int32Array.of(BOS)], 1, new Rng(1), { temperatur: 2 } as Parameters<typeof sampleContinuations>[5]), 'temperatur', 'temperature');
  refused(() => frontierSvg([], { Title: 'x' } as Parameters<typeof frontierSvg>[1]), 'Title', 'title');
  refused(() => new ProgressBar({ quiet: true } as ConstructorParameters<typeof ProgressBar>[0]), 'quiet', null);
  refused(() => loadCorpus({ vocab: 10 } as Parameters<typeof loadCorpus>[0]), 'vocab', null);
});

test('options: a bad value names the option, what it takes and what it got', () => {
  const bad = (call: () => unknown, option: string, expected: RegExp) => {
    try {
      call();
    } catch (error) {
      assert.instance(error, TrainOptionError);
      const e = error as TrainOptionError;
      assert.is(e.code, 'ERR_FDPO_INVALID_ARGUMENT');
      assert.is(e.option, option);
      assert.match(e.expected, expected);
      return;
    }
    assert.unreachable(`a bad ${option} was accepted`);
  };
  bad(() => resolveOptions({ steps: -1 }), 'steps', /^a positive integer$/);
  bad(() => resolveOptions({ context: 9 }), 'context', /^a positive integer at most 4/);
  bad(() => resolveOptions({ lossType: 'ipoo' as 'ipo' }), 'lossType', /^a loss type or a list of them/);
  bad(() => resolveOptions({ methods: ['dpo', 'ppo'] as ExperimentOptions['methods'] }), 'methods', /^one or more of dpo, ppo-gt, preferred-ft, unlikelihood, each once$/);
  bad(() => resolveOptions({ methods: ['dpo', 'dpo'] }), 'methods', /each once/);
  bad(() => resolveOptions({ samplesPerPrompt: 3 }), 'samplesPerPrompt', /divides 2·batchSize \(32/);
  // A vocabulary too small for the prompts is refused before the reference is trained.
  const phases: string[] = [];
  bad(() => buildReference(resolveOptions({ ...TINY_OPTIONS, vocabWords: 5 }), { onPhase: (phase) => phases.push(phase) }), 'vocabWords', /large enough that 2500 training and 208 held-out sentences/);
  assert.equal(phases, ['corpus']);
  const { stage, data } = tiny();
  bad(() => trainDpo(stage.ref, data, { beta: 0.1, steps: 1, batchSize: 100000, lr: 1e-3, evalEvery: 1, seed: 1 }), 'batchSize', /^at most \d+ \(the training pairs\)$/);
});

test('adam: a few steps on a quadratic move towards the minimum', () => {
  const config: ModelConfig = { vocab: 3, context: 1, embed: 1, hidden: 1 };
  const model = randomModel(config, 1, 'float64');
  const adam = new Adam(model, { lr: 0.05 });
  const grads: Params = model.zeros();
  const norm = (p: Record<string, FloatArray>) => {
    let sum = 0;
    for (const n of PARAM_NAMES) for (const x of p[n]!) sum += x * x;
    return sum;
  };
  const start = norm(model.params);
  for (let i = 0; i < 50; i++) {
    zeroParams(grads);
    for (const n of PARAM_NAMES) for (let j = 0; j < grads[n].length; j++) grads[n][j] = model.params[n][j]!; // ∇ of ½‖θ‖²
    adam.update(grads);
  }
  assert.ok(norm(model.params) < 0.5 * start, `${start} → ${norm(model.params)}`);
});

test.run();
