// The C header the loss-kind table gives (scripts/generate-loss-kinds.ts writes it).
import { CALL_LOSS_ENUMS, HYPERPARAMETERS, HYPERPARAMETER_NAMES, LOSS_KINDS, LOSS_TYPES, type LossKind } from '../lib/loss-kinds.js';

const FLAGS: [keyof LossKind, string, string][] = [
  ['needsRef', 'NEEDS_REF', 'reads ref_chosen and ref_rejected'],
  ['averagedScores', 'AVERAGED_SCORES', 'scores sequences by their token-mean log-prob'],
  ['reportsAveraged', 'REPORTS_AVERAGED', 'rewards and logps metrics on averaged log-probs'],
  ['couplesBatch', 'COUPLES_BATCH', "a pair's loss depends on the other pairs"],
  ['pairTerm', 'PAIR_TERM', 'has a pair-local term (loss_math.h pairLoss)'],
  ['chosenNll', 'CHOSEN_NLL', 'adds the token-mean NLL of the chosen completions'],
];

const upper = (name: string) => name.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();
const paramConstant = (name: string) => `FDPO_PARAM_${upper(name)}`;
const kindConstant = (name: string) => `FDPO_LOSS_${name.toUpperCase()}`;

export function kindsHeader(): string {
  const lines: string[] = [];
  const add = (...more: string[]) => lines.push(...more);
  add(
    '/*',
    ' * fused-dpo: the loss kinds and their hyperparameters, and the loss types of fdpo_policy_loss and',
    ' * fdpo_kto_loss; part of the C ABI (fused_dpo.h includes it).',
    ' * Generated from lib/loss-kinds.ts by `npm run generate`: do not edit, change the table instead.',
    ' * Codes and indexes are ABI: they are only ever appended.',
    ' */',
    '#ifndef FUSED_DPO_KINDS_H',
    '#define FUSED_DPO_KINDS_H',
    '',
    'typedef enum {',
  );
  for (const name of LOSS_TYPES) add(`  ${kindConstant(name)} = ${LOSS_KINDS[name].code},`);
  add(`  FDPO_LOSS_COUNT = ${LOSS_TYPES.length}`, '} fdpo_loss_kind;', '');
  add('/* Indexes into fdpo_loss_config.params. */', 'typedef enum {');
  for (const name of HYPERPARAMETER_NAMES) {
    const p = HYPERPARAMETERS[name];
    add(`  ${paramConstant(name)} = ${p.code}, /* ${p.doc}; TRL's ${p.trl} */`);
  }
  add(`  FDPO_PARAM_COUNT = ${HYPERPARAMETER_NAMES.length}`, '} fdpo_loss_param;', '');
  for (const e of CALL_LOSS_ENUMS) {
    const names = Object.keys(e.table).sort((a, b) => e.table[a]!.code - e.table[b]!.code);
    add(`/* ${e.doc}. */`, 'typedef enum {');
    for (const name of names) add(`  ${e.prefix}${name.toUpperCase()} = ${e.table[name]!.code}, /* ${e.table[name]!.doc} */`);
    add(`  ${e.count} = ${names.length}`, `} ${e.type};`, '');
  }
  add('/* A kind\'s properties, as bits. */');
  FLAGS.forEach(([, flag, doc], i) => add(`#define FDPO_KIND_${flag} ${1 << i}u /* ${doc} */`));
  add(
    '',
    '/* X(kind, name, flags, reads): every kind in code order; reads has bit p set when the kind reads',
    ' * params[p]. */',
    '#define FDPO_LOSS_KIND_TABLE(X) \\',
  );
  for (const name of LOSS_TYPES) {
    const kind: LossKind = LOSS_KINDS[name];
    const flags = FLAGS.filter(([key]) => kind[key]).map(([, flag]) => `FDPO_KIND_${flag}`);
    const reads = kind.reads.reduce((bits, p) => bits | (1 << HYPERPARAMETERS[p].code), 0);
    add(`  X(${kindConstant(name)}, "${name}", ${flags.length ? flags.join(' | ') : '0u'}, ${reads}u) \\`);
  }
  add('', '/* X(param, name, default): every hyperparameter in index order. */', '#define FDPO_PARAM_TABLE(X) \\');
  for (const name of HYPERPARAMETER_NAMES) add(`  X(${paramConstant(name)}, "${name}", ${HYPERPARAMETERS[name].default}) \\`);
  add('', '#endif /* FUSED_DPO_KINDS_H */', '');
  return lines.join('\n');
}
