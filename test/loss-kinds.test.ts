// The loss-kind table is stated once (lib/loss-kinds.ts): the C header is generated from it, the
// compiled binary carries the same table, and the README and SPEC.md name every kind and option
// (and the README every error code).
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { ERROR_CODES } from '../lib/errors.js';
import { native } from '../lib/native.js';
import { CALL_LOSS_ENUMS, HYPERPARAMETERS, HYPERPARAMETER_NAMES, LOSS_DEFAULTS, LOSS_KINDS, LOSS_TYPES } from '../lib/loss-kinds.js';
import { kindsHeader } from '../scripts/loss-kinds-header.js';

const root = new URL('..', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, root), 'utf8');

// The flag bits, in the order scripts/loss-kinds-header.ts gives them.
const FLAG_KEYS = ['needsRef', 'averagedScores', 'reportsAveraged', 'couplesBatch', 'pairTerm', 'chosenNll'] as const;

test('csrc/core/fused_dpo_kinds.h is what the table gives (run `npm run generate` after changing it)', () => {
  assert.is(read('csrc/core/fused_dpo_kinds.h'), kindsHeader());
});

test('codes are 0..n-1 in table order, hyperparameter codes too', () => {
  assert.equal(LOSS_TYPES.map((t) => LOSS_KINDS[t].code), LOSS_TYPES.map((_, i) => i));
  assert.equal(HYPERPARAMETER_NAMES.map((n) => HYPERPARAMETERS[n].code), HYPERPARAMETER_NAMES.map((_, i) => i));
  for (const name of HYPERPARAMETER_NAMES) assert.ok(HYPERPARAMETERS[name].ok(LOSS_DEFAULTS[name]), `${name}'s default passes its own rule`);
});

test('the loaded binary was built from this table (names, codes, flags, reads, defaults)', () => {
  const table = native().lossTable();
  assert.equal(
    table.kinds.map((k) => k.name),
    LOSS_TYPES,
    'the binary lists the kinds in code order',
  );
  for (const k of table.kinds) {
    const kind = LOSS_KINDS[k.name as keyof typeof LOSS_KINDS];
    const flags = FLAG_KEYS.reduce((bits, key, i) => bits | (kind[key] ? 1 << i : 0), 0);
    const reads = kind.reads.reduce((bits, p) => bits | (1 << HYPERPARAMETERS[p].code), 0);
    assert.is(k.code, kind.code, `${k.name}: code`);
    assert.is(k.flags, flags, `${k.name}: flags`);
    assert.is(k.reads, reads, `${k.name}: reads`);
  }
  assert.equal(
    table.params.map((p) => [p.name, p.code, p.default]),
    HYPERPARAMETER_NAMES.map((n) => [n, HYPERPARAMETERS[n].code, HYPERPARAMETERS[n].default]),
  );
});

test("the README's and SPEC.md's loss tables name every kind, and the README every hyperparameter", () => {
  const readme = read('README.md'), spec = read('SPEC.md');
  for (const type of LOSS_TYPES) {
    assert.ok(readme.includes(`| \`${type}\` |`), `README's loss table lacks ${type}`);
    assert.ok(new RegExp(`^\\| ${type} \\|`, 'm').test(spec), `SPEC.md's loss table lacks ${type}`);
  }
  for (const name of HYPERPARAMETER_NAMES) assert.ok(readme.includes(`| \`${name}\` |`), `README's options table lacks ${name}`);
});

test("policyLoss's and ktoLoss's loss types: codes 0..n-1, named in README and SPEC.md, the same in the Python binding", () => {
  const readme = read('README.md'), spec = read('SPEC.md'), abi = read('python/fused_dpo/_abi.py');
  for (const e of CALL_LOSS_ENUMS) {
    const names = Object.keys(e.table);
    assert.equal(names.map((n) => e.table[n]!.code), names.map((_, i) => i), `${e.type}: codes in table order`);
    for (const name of names) {
      const named = new RegExp(`\`'?${name}'?\``);
      assert.ok(named.test(readme), `README does not name ${e.type}'s ${name}`);
      assert.ok(named.test(spec), `SPEC.md does not name ${e.type}'s ${name}`);
    }
    // _abi.py states the codes as a dict literal: { "name": code, ... } (the binding has no way to ask the library)
    const python = `{${names.map((n) => `"${n}": ${e.table[n]!.code}`).join(', ')}}`;
    assert.ok(abi.includes(python), `python/fused_dpo/_abi.py lacks ${python} for ${e.type}`);
  }
});

test("the README's Errors table explains every error code", () => {
  const readme = read('README.md');
  for (const code of ERROR_CODES) assert.ok(readme.includes(`| \`${code}\` |`), `README's Errors table lacks ${code}`);
});

test.run();
