import { describe, expect, it } from '@jest/globals';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { Saga } from '../../api/index.js';
import { validateFile } from '../../cli/validate.js';
import { REPO_DIR } from '../env/components.js';

const EXAMPLES = join(REPO_DIR, 'examples');
const INVALID = join(EXAMPLES, 'invalid');
const SYSTEMS = ['dual-backend', 'provider-channels', 'ai-gateway', 'chat-migration', 'suoke-life'];

interface Expected {
  file: string;
  field: string;
  schemaError: string;
  apiServerError: string | null;
  /** Set when only the validating webhook (the same zod rules) can refuse the resource. */
  refusedBy?: 'webhook';
  why?: string;
}
const expected = parse(readFileSync(join(INVALID, 'expected.yaml'), 'utf8')) as Expected[];

function reportsOf(folder: string) {
  return readdirSync(folder)
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((f) => validateFile(join(folder, f)));
}

describe('examples/', () => {
  it('has one folder per system in DESIGN.md, each with a README', () => {
    const folders = readdirSync(EXAMPLES).filter((f) => statSync(join(EXAMPLES, f)).isDirectory());
    expect(folders.sort()).toEqual([...SYSTEMS, 'invalid', 'cdk8s-app'].sort());
    for (const system of SYSTEMS) expect(readdirSync(join(EXAMPLES, system))).toContain('README.md');
  });

  it.each(SYSTEMS)('every resource of %s validates', (system) => {
    const reports = reportsOf(join(EXAMPLES, system));
    expect(reports.length).toBeGreaterThan(0);
    for (const report of reports) {
      expect({ where: `${report.file} ${report.kind}/${report.name}`, errors: report.errors }).toEqual({
        where: `${report.file} ${report.kind}/${report.name}`,
        errors: [],
      });
    }
  });

  it('suoke-life has about 20 services, STRICT mTLS with allowed callers everywhere, and the health-data saga', () => {
    const resources = reportsOf(join(EXAMPLES, 'suoke-life')).map((r) => r.resource);
    const services = resources.filter((r) => r?.kind === 'AiService');
    expect(services.length).toBeGreaterThanOrEqual(18);
    for (const service of services) {
      if (service?.kind !== 'AiService') continue;
      expect(service.spec.security.mtls).toBe('STRICT');
      expect(service.spec.security.allowedCallers?.length).toBeGreaterThan(0);
    }
    const strategies = new Set(
      services.flatMap((s) =>
        s?.kind === 'AiService' ? s.spec.upstreams.map((u) => u.loadBalancer.strategy) : [],
      ),
    );
    for (const strategy of ['round-robin', 'random', 'weighted-round-robin', 'least-request'])
      expect(strategies).toContain(strategy);
    const saga = resources.find((r) => r?.kind === 'Saga' && r.metadata.name === 'health-data') as Saga;
    expect(saga.spec.steps.map((s) => s.name)).toEqual([
      'validate_user',
      'save_health_data',
      'update_blockchain',
      'trigger_ai_analysis',
    ]);
    expect(saga.spec.steps.slice(0, 3).every((s) => s.compensation !== undefined)).toBe(true);
  });

  it('chat-migration has the session-migration saga with compensations as its rollback', () => {
    const saga = reportsOf(join(EXAMPLES, 'chat-migration')).find((r) => r.kind === 'Saga')?.resource as Saga;
    expect(saga.metadata.name).toBe('session-migration');
    expect(saga.spec.steps.filter((s) => s.compensation).length).toBeGreaterThanOrEqual(2);
  });
});

describe('examples/invalid/', () => {
  it('holds at least 15 bad resources, each with its expected error', () => {
    const files = readdirSync(INVALID).filter((f) => f !== 'expected.yaml');
    expect(files.length).toBeGreaterThanOrEqual(15);
    expect(files.sort()).toEqual(expected.map((e) => e.file).sort());
  });

  it.each(expected.map((e) => [e.file, e]))(
    '%s fails with its recorded field and message',
    (_file, entry) => {
      const { file, field, schemaError } = entry as Expected;
      const reports = validateFile(join(INVALID, file));
      expect(reports).toHaveLength(1);
      expect(reports[0]?.errors).toEqual(
        expect.arrayContaining([
          { field, message: expect.stringContaining(schemaError) as unknown as string },
        ]),
      );
    },
  );

  it('says why, and that the webhook refuses it, wherever the API server cannot', () => {
    for (const entry of expected.filter((e) => e.apiServerError === null)) {
      expect({ file: entry.file, refusedBy: entry.refusedBy }).toEqual({
        file: entry.file,
        refusedBy: 'webhook',
      });
      expect(entry.why).toBeTruthy();
    }
    for (const entry of expected.filter((e) => e.apiServerError !== null))
      expect(entry.refusedBy).toBeUndefined();
  });
});
