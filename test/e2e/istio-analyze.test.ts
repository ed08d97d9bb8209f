import { afterAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exampleSystems, synthesize } from '../../cli/synth.js';
import { REPO_DIR } from '../env/components.js';
import { requireBinary } from '../env/index.js';
import { runCommand } from '../env/processes.js';

/**
 * Istio must accept aimesh's policies as a whole, not only one by one: `istioctl analyze`
 * (built from Istio's Go module by test/env) over every example's render, all namespaces
 * at once (`-A`: without it analyze looks at `default` only and reports nothing). Before
 * one VirtualService per host it reported IST0109 (several VirtualServices for one host).
 */
const out = mkdtempSync(join(tmpdir(), 'aimesh-analyze-'));

afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('istioctl analyze', () => {
  it('finds no issue in what aimesh renders for every example', async () => {
    const result = synthesize(exampleSystems(join(REPO_DIR, 'examples')), out);
    expect(result.invalid).toEqual([]);
    const files = readdirSync(out).map((f) => join(out, f));
    expect(files.length).toBeGreaterThan(30);
    const analyzed = await runCommand(requireBinary('istioctl'), [
      'analyze',
      '--use-kube=false',
      '-A',
      ...files,
    ]);
    expect(analyzed.stderr + analyzed.stdout).toContain('No validation issues found');
    expect(analyzed.stdout + analyzed.stderr).not.toMatch(/IST\d{4}/);
    expect(analyzed.code).toBe(0);
  });
});
