/**
 * Authentication of the saga control API, as Dapr authenticates callers of its API with
 * a shared token: every call presents `Authorization: Bearer <token>` (an HTTP header, or
 * gRPC metadata), and the token is the content of one file. Loopback alone is not enough:
 * every container in the pod shares it, and only the app container mounts the token.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import type { SidecarConfig } from '../../api/index.js';
import { AimeshError, describe } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';

/** Checks a caller's `authorization` value; throws `input.unauthenticated` when it is not the token. */
export type ControlAuth = (authorization: string | undefined) => void;

/** 32 random bytes, as many as an HMAC-SHA256 key: guessing is out of reach. */
const TOKEN_BYTES = 32;

/**
 * The check the control API runs on every call, or undefined when no token is configured.
 * Runs at the sidecar's start: a token file that is configured but missing (and not to be
 * created), unreadable or empty stops the sidecar with an error naming the file, so a
 * control API never runs open by accident.
 */
export function controlAuth(settings: SidecarConfig['controlAuth'], log: Logger): ControlAuth | undefined {
  const file = settings.tokenFile;
  if (!file) return undefined;
  if (settings.createToken) createTokenFile(file, log);
  let current = readToken(file);
  let warned = false;
  return (authorization) => {
    try {
      current = refreshed(file, current);
      warned = false;
    } catch (error) {
      // Once per outage, not once per call.
      if (!warned)
        log.warn('cannot read the saga control API token file; keeping the last token', { file, error });
      warned = true;
    }
    const presented = /^Bearer +(\S+) *$/i.exec(authorization ?? '')?.[1];
    if (presented === undefined || !sameToken(presented, current.token)) {
      throw new AimeshError(
        'input.unauthenticated',
        `the saga control API needs "authorization: Bearer <token>" with the token in ${file}`,
      );
    }
  };
}

interface TokenRead {
  token: string;
  stat: Stats;
}

/**
 * Writes a new token unless the file exists: a sidecar container restarted in the same
 * pod finds the token the app already holds and keeps it. `wx` makes the write exclusive.
 */
function createTokenFile(file: string, log: Logger): void {
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
    // 0644: the boundary is the volume, mounted only into the app and the sidecar; the app
    // container's user differs from the sidecar's, so a narrower mode would lock it out.
    writeFileSync(file, `${randomBytes(TOKEN_BYTES).toString('base64url')}\n`, { flag: 'wx', mode: 0o644 });
    log.info('wrote a new saga control API token', { file });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw new AimeshError(
      'input.invalid',
      `cannot write the saga control API token file ${file}: ${describe(error)}`,
      {
        cause: error,
      },
    );
  }
}

function readToken(file: string): TokenRead {
  try {
    const stat = statSync(file);
    const token = readFileSync(file, 'utf8').trim();
    if (!token) throw new Error('the file is empty');
    return { token, stat };
  } catch (error) {
    throw new AimeshError(
      'input.invalid',
      `cannot read the saga control API token file ${file} (controlAuth.tokenFile): ${describe(error)}`,
      { cause: error },
    );
  }
}

/**
 * The token, read again when the file changed (a rotated Secret is a new file behind a
 * symlink: the inode changes). The caller keeps the last good token when this throws:
 * callers holding it go on working, and the log says why a rotation did not apply.
 */
function refreshed(file: string, last: TokenRead): TokenRead {
  const stat = statSync(file);
  if (stat.ino === last.stat.ino && stat.mtimeMs === last.stat.mtimeMs && stat.size === last.stat.size)
    return last;
  return readToken(file);
}

/** Constant time whatever the lengths: both sides are hashed to 32 bytes first. */
function sameToken(presented: string, token: string): boolean {
  const hash = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(hash(presented), hash(token));
}
