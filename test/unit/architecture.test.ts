/**
 * The import-boundary rule in eslint.config.js holds the one-way layout. These cases show
 * it refuses wrong-way imports (and lets right-way ones through), so a change that
 * weakens the rule fails here, not silently.
 */
import { describe, expect, it } from '@jest/globals';
import { ESLint } from 'eslint';
import { REPO_DIR } from '../env/components.js';

const eslint = new ESLint({ cwd: REPO_DIR });

async function boundaryErrors(file: string, from: string): Promise<string[]> {
  const [result] = await eslint.lintText(`import { x } from '${from}';\nexport const y = x;\n`, {
    filePath: `${REPO_DIR}/${file}`,
  });
  return (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('one-way imports', () => {
  it.each([
    ['api/saga.ts', '../operator/rbac.js'],
    ['api/saga.ts', '../render/index.js'],
    ['lib/log/index.ts', '../../api/index.js'],
    ['render/index.ts', '../operator/kube/resources.js'],
    ['render/index.ts', '../cli/validate.js'],
    ['operator/index.ts', '../sidecar/index.js'],
    ['operator/manager.ts', '../cli/main.js'],
    ['sidecar/saga/engine.ts', '../../operator/events.js'],
    ['sidecar/index.ts', '../test/env/index.js'],
    ['tools/generated.ts', '../cli/main.js'],
    ['render/index.ts', '../cdk8s/index.js'],
    ['cdk8s/index.ts', '../operator/index.js'],
    ['cdk8s/index.ts', '../cli/synth.js'],
  ])('refuses %s importing %s', async (file, from) => {
    const errors = await boundaryErrors(file, from);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/imports go one way/);
  });

  it.each([
    ['api/template.ts', '../lib/encode/index.js'],
    ['render/index.ts', '../api/index.js'],
    ['operator/manager.ts', '../render/index.js'],
    ['sidecar/index.ts', '../lib/log/index.js'],
    ['cli/main.ts', '../operator/index.js'],
    ['cli/main.ts', '../tools/generated.js'],
    ['tools/generated.ts', '../operator/rbac.js'],
    ['operator/reconcilers/saga.ts', '../controller/controller.js'],
    ['cdk8s/index.ts', '../render/index.js'],
    ['cli/main.ts', '../cdk8s/index.js'],
  ])('lets %s import %s', async (file, from) => {
    expect(await boundaryErrors(file, from)).toEqual([]);
  });
});
