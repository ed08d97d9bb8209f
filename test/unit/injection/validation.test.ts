import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { admissionResponse } from '../../../operator/admission/review.js';
import { validationWebhook } from '../../../operator/admission/validation.js';
import { REPO_DIR } from '../../env/components.js';

/** Every example the API server's CEL cannot refuse is refused by the webhook, with aimesh validate's words. */
const expected = parse(readFileSync(join(REPO_DIR, 'examples', 'invalid', 'expected.yaml'), 'utf8')) as {
  file: string;
  field: string;
  schemaError: string;
  apiServerError: string | null;
}[];

const review = (object: unknown, operation: 'CREATE' | 'UPDATE' = 'CREATE', subResource?: string) => ({
  uid: 'u-1',
  kind: { group: 'aimesh.io', version: 'v1alpha1', kind: (object as { kind: string }).kind },
  operation,
  object,
  ...(subResource ? { subResource } : {}),
});

describe('the validating webhook for AiService and Saga', () => {
  const webhook = validationWebhook();

  it.each(expected.map((e) => [e.file, e] as const))(
    'refuses %s with the field and the message of aimesh validate',
    (_f, entry) => {
      const object = parse(
        readFileSync(join(REPO_DIR, 'examples', 'invalid', entry.file), 'utf8'),
      ) as unknown;
      const verdict = webhook(review(object));
      expect(verdict.outcome).toBe('denied');
      expect(verdict.denied).toContain(
        entry.field ? `${entry.field}: ${entry.schemaError}` : entry.schemaError,
      );
      const answer = admissionResponse('u-1', verdict).response;
      expect(answer).toMatchObject({ allowed: false, status: { code: 422, reason: 'Invalid' } });
    },
  );

  it('allows every valid example and ignores status writes and other groups', () => {
    const valid = parse(
      readFileSync(join(REPO_DIR, 'examples', 'suoke-life', 'health-data-saga.yaml'), 'utf8'),
    );
    expect(webhook(review(valid)).outcome).toBe('allowed');
    expect(webhook(review(valid, 'UPDATE')).outcome).toBe('allowed');
    expect(webhook(review({ kind: 'Saga', spec: {} }, 'UPDATE', 'status')).outcome).toBe('ignored');
    expect(webhook({ ...review(valid), kind: { group: '', version: 'v1', kind: 'Pod' } }).outcome).toBe(
      'ignored',
    );
    expect(admissionResponse('u-2', webhook(review(valid))).response).toEqual({ uid: 'u-2', allowed: true });
  });
});
