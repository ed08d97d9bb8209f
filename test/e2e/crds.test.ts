import { describe, expect, it } from '@jest/globals';
import { readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { exampleSystems } from '../../cli/synth.js';
import { REPO_DIR } from '../env/components.js';
import { kubectl } from './shared.js';

const EXAMPLES = join(REPO_DIR, 'examples');
const systems = exampleSystems(EXAMPLES).map((folder) => basename(folder));

interface InvalidExample {
  file: string;
  /** null when the API server cannot check it (the entry then says why). */
  apiServerError: string | null;
}
const expected = parse(readFileSync(join(EXAMPLES, 'invalid', 'expected.yaml'), 'utf8')) as InvalidExample[];
const invalid = expected.filter(
  (e): e is InvalidExample & { apiServerError: string } => e.apiServerError !== null,
);
/** Only the validating webhook refuses these; its own test covers them. */
const webhookOnly = expected.filter((e) => e.apiServerError === null);

function namespacesIn(folder: string): string[] {
  const names = new Set<string>();
  for (const file of readdirSync(folder).filter((f) => /\.ya?ml$/.test(f))) {
    for (const doc of parseAllDocuments(readFileSync(join(folder, file), 'utf8'))) {
      const ns = (doc.toJS() as { metadata?: { namespace?: string } } | null)?.metadata?.namespace;
      if (ns) names.add(ns);
    }
  }
  return [...names];
}

describe('CRDs on a real API server', () => {
  it.each(systems)('accepts every resource of examples/%s', async (system) => {
    const folder = join(EXAMPLES, system);
    for (const ns of namespacesIn(folder)) {
      const created = await kubectl(['create', 'namespace', ns]);
      expect(created.stderr.replace(/.*AlreadyExists.*/, '')).toBe('');
    }
    const applied = await kubectl(['apply', '--server-side', '-f', folder]);
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
  });

  it.each(invalid.map((e) => [e.file, e.apiServerError]))(
    'rejects examples/invalid/%s with its recorded message',
    async (file, message) => {
      const applied = await kubectl(['apply', '--server-side', '-f', join(EXAMPLES, 'invalid', file)]);
      expect(applied.code).not.toBe(0);
      expect(applied.stderr).toContain(message);
    },
  );

  it.each(webhookOnly.map((e) => [e.file]))(
    'accepts examples/invalid/%s, which only the webhook refuses (update expected.yaml if this fails)',
    async (file) => {
      const applied = await kubectl([
        'apply',
        '--server-side',
        '--dry-run=server',
        '-f',
        join(EXAMPLES, 'invalid', file),
      ]);
      expect(applied.stderr).toBe('');
      expect(applied.code).toBe(0);
    },
  );

  it('kubectl explain shows the field descriptions', async () => {
    const explained = await kubectl(['explain', 'aiservice.spec.upstreams']);
    expect(explained.code).toBe(0);
    expect(explained.stdout).toContain('A service this app calls through the sidecar.');
    expect(explained.stdout).toMatch(/loadBalancer\s+<Object>/);
    expect(explained.stdout).toContain('How requests are spread over the upstream instances.');
  });

  it('kubectl get shows the printer columns and finds resources by short name and category', async () => {
    const aiServices = await kubectl(['get', 'ais', '--all-namespaces']);
    expect(aiServices.code).toBe(0);
    expect(aiServices.stdout.split('\n')[0]).toMatch(
      /^NAMESPACE\s+NAME\s+READY\s+REPLICAS\s+AVAILABLE\s+AGE$/,
    );
    const sagas = await kubectl(['get', 'sagas', '--all-namespaces']);
    expect(sagas.stdout.split('\n')[0]).toMatch(/^NAMESPACE\s+NAME\s+ORCHESTRATOR\s+STEPS\s+READY\s+AGE$/);
    // The step count comes from status (a JSONPath cannot count); the operator writes it.
    const counted = await kubectl([
      'patch',
      'saga',
      'health-data',
      '-n',
      'suoke-life',
      '--subresource=status',
      '--type=merge',
      '-p',
      '{"status":{"steps":4}}',
    ]);
    expect(counted.code).toBe(0);
    const withSteps = await kubectl(['get', 'sagas', '-n', 'suoke-life']);
    expect(withSteps.stdout).toMatch(/health-data\s+health-orchestrator\s+4\s/);
    const category = await kubectl(['get', 'aimesh', '--all-namespaces', '-o', 'name']);
    expect(category.stdout).toContain('aiservice.aimesh.io/');
    expect(category.stdout).toContain('saga.aimesh.io/');
  });

  it('applies schema defaults on the server', async () => {
    const got = await kubectl(['get', 'sagas', '--all-namespaces', '-o', 'json']);
    const items = (
      JSON.parse(got.stdout) as { items: { spec: { steps: { retry: { maxAttempts: number } }[] } }[] }
    ).items;
    expect(items.length).toBeGreaterThan(0);
    for (const saga of items)
      for (const step of saga.spec.steps) expect(step.retry.maxAttempts).toBeGreaterThan(0);
  });
});
