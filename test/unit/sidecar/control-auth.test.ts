import { afterAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger } from '../../../lib/log/index.js';
import { controlAuth } from '../../../sidecar/saga/index.js';

/** The saga control API's token check against real files in a temporary folder. */
const dir = mkdtempSync(join(tmpdir(), 'aimesh-control-auth-'));
const quiet = createLogger('test', { destination: new Writable({ write: (_c, _e, done) => done() }) });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const refused = (check: (a: string | undefined) => void, authorization: string | undefined) => {
  try {
    check(authorization);
    return 'accepted';
  } catch (error) {
    return (error as { code: string }).code;
  }
};

describe('saga control API token', () => {
  it('is off without a token file', () => {
    expect(controlAuth({ createToken: false }, quiet)).toBeUndefined();
  });

  it('creates a random token once, readable by the app container, and accepts only it', () => {
    const file = join(dir, 'created', 'token');
    const check = controlAuth({ tokenFile: file, createToken: true }, quiet);
    const token = readFileSync(file, 'utf8').trim();
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(statSync(file).mode & 0o777).toBe(0o644);
    if (!check) throw new Error('no check');
    expect(refused(check, `Bearer ${token}`)).toBe('accepted');
    expect(refused(check, `bearer ${token}`)).toBe('accepted');
    for (const wrong of [
      undefined,
      '',
      token,
      `Bearer ${token}x`,
      `Bearer ${token.slice(1)}`,
      `Basic ${token}`,
    ])
      expect(refused(check, wrong)).toBe('input.unauthenticated');
    // A restarted sidecar container keeps the token the app already holds.
    controlAuth({ tokenFile: file, createToken: true }, quiet);
    expect(readFileSync(file, 'utf8').trim()).toBe(token);
  });

  it('follows a rotated file, and keeps the last token while the file cannot be read', () => {
    const file = join(dir, 'rotated');
    writeFileSync(file, 'first\n');
    const check = controlAuth({ tokenFile: file, createToken: false }, quiet);
    if (!check) throw new Error('no check');
    expect(refused(check, 'Bearer first')).toBe('accepted');
    // As a Secret volume rotates: a new file put in place, so the inode changes.
    writeFileSync(`${file}.new`, 'second\n');
    renameSync(`${file}.new`, file);
    expect(refused(check, 'Bearer first')).toBe('input.unauthenticated');
    expect(refused(check, 'Bearer second')).toBe('accepted');
    rmSync(file);
    expect(refused(check, 'Bearer second')).toBe('accepted');
  });

  it('refuses to start with a missing or empty token file, naming it', () => {
    const missing = join(dir, 'missing');
    expect(() => controlAuth({ tokenFile: missing, createToken: false }, quiet)).toThrow(
      `cannot read the saga control API token file ${missing}`,
    );
    const empty = join(dir, 'empty');
    writeFileSync(empty, '\n');
    expect(() => controlAuth({ tokenFile: empty, createToken: false }, quiet)).toThrow(
      `cannot read the saga control API token file ${empty} (controlAuth.tokenFile): the file is empty`,
    );
  });
});
