// The PyTorch binding (python/fused_dpo): its unittest suites under Debian's /usr/bin/python3 and
// its torch (python3-torch), against build-c/libfused_dpo.so as `npm run build:c` builds it (or the
// library FUSED_DPO_LIB names). Skips (id 'python') only where that python has no torch.
import { execFileSync, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { testSeed } from './helpers/random.js';
import { skip } from './helpers/skip.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// Debian's interpreter: a python3 earlier on PATH may be another one without torch.
const python = '/usr/bin/python3';
const torchVersion = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
const hasTorch = torchVersion.status === 0;

let library: string | null = null;
function builtLibrary(): string {
  if (library === null) {
    library = process.env.FUSED_DPO_LIB ?? join(root, 'build-c', 'libfused_dpo.so');
    // Incremental: seconds once build-c/ exists.
    if (!process.env.FUSED_DPO_LIB) execFileSync('npm', ['run', 'build:c'], { cwd: root, stdio: 'pipe' });
  }
  return library;
}

function runSuite(module: string): { status: number | null; output: string } {
  const result = spawnSync(python, ['-m', 'unittest', '-v', module], {
    cwd: join(root, 'python', 'tests'),
    env: {
      ...process.env,
      PYTHONPATH: [join(root, 'python'), join(root, 'python', 'tests')].join(':'),
      FUSED_DPO_LIB: builtLibrary(),
      FDPO_TEST_SEED: String(testSeed()),
    },
    encoding: 'utf8',
  });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

const suites = {
  test_loss: 'dpo_loss equals PyTorch autograd of TRL\'s formula (loss, gradient, metrics) for every loss type and dtype',
  test_training: 'a tiny torch model trained with dpo_loss ends at the weights TRL\'s formula gives',
  test_errors: 'bad inputs raise Python exceptions with the C ABI\'s message; CUDA dispatch without a device',
  test_policy: "policy_loss equals PyTorch autograd of TRL's GRPOTrainer loss (loss, gradient, metrics, logps) for every loss_type and dtype",
  test_readme: "the README's PyTorch snippet runs",
  test_abi: "the binding's structs and constants are the C header's (fields in order, types, enum values)",
};

for (const [module, title] of Object.entries(suites)) {
  test(`python: ${title}`, () => {
    if (!hasTorch) return skip('python', `${python} has no torch (apt-get install python3-torch)`);
    const { status, output } = runSuite(module);
    assert.ok(status === 0 && /^OK\b/m.test(output), `python -m unittest ${module} (torch ${torchVersion.stdout.trim()}):\n${output}`);
    assert.not.match(output, /skipped/, `${module} skipped a test:\n${output}`);
  });
}

test('python: CUDA tensors on a GPU match the CPU backend', () => {
  if (!hasTorch) return skip('python', `${python} has no torch (apt-get install python3-torch)`);
  const { status, output } = runSuite('test_cuda');
  assert.is(status, 0, output);
  if (/^OK \(skipped=\d+\)/m.test(output)) return skip('device', 'no CUDA device for torch and libfused_dpo here');
  assert.match(output, /^OK$/m, output);
});

test.run();
