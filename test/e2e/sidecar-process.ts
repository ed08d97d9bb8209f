import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SidecarConfigInput } from '../../api/index.js';
import { DEFAULT_SIDECAR_RESOURCES, sidecarNodeOptions } from '../../render/index.js';
import { REPO_DIR } from '../env/components.js';
import { BUILT_ENTRY } from '../../image/bundle.js';
import { freePorts, startProcess, waitFor, type ManagedProcess } from '../env/index.js';

export interface SidecarProcess {
  process: ManagedProcess;
  outbound: string;
  admin: string;
  /** The saga control API. */
  control: string;
  /** host:port of the saga gRPC API. */
  controlGrpc: string;
  /**
   * The header (HTTP) or metadata (gRPC) every control API call carries: the token the
   * sidecar wrote at start, as it does in a pod. Empty when the config turns auth off.
   */
  controlAuth: { authorization?: string };
  /** Writes a new config; resolves once the sidecar serves it (hot reload). */
  reload: (config: Omit<SidecarConfigInput, 'listen'>) => Promise<void>;
  stop: () => Promise<void>;
}

export interface SidecarProcessOptions {
  /**
   * Runs the bundled CLI (dist/image/, `npm run build` first) with the V8 flags the render
   * gives the sidecar container, as the image runs it: for benchmarks. Tests run the sources.
   */
  built?: boolean;
  /** More Node options for the sidecar process, e.g. `--inspect=127.0.0.1:<port>`. */
  nodeArgs?: string[];
}

/** Runs `aimesh sidecar` as its own process on free loopback ports, as it runs in a pod. */
export async function startSidecar(
  name: string,
  config: Omit<SidecarConfigInput, 'listen'>,
  consulAddress: string,
  options: SidecarProcessOptions = {},
): Promise<SidecarProcess> {
  const dir = mkdtempSync(join(tmpdir(), `aimesh-sidecar-${name}-`));
  const file = join(dir, 'sidecar.json');
  const [outbound, admin, control, controlGrpc] = (await freePorts(4)) as [number, number, number, number];
  const listen = { address: '127.0.0.1', outbound, admin, control, controlGrpc };
  // As rendered for a pod: the sidecar writes a random token into a file only the app reads.
  const controlAuth = config.controlAuth ?? { tokenFile: join(dir, 'control', 'token'), createToken: true };
  const write = (c: Omit<SidecarConfigInput, 'listen'>) =>
    writeFileSync(file, JSON.stringify({ controlAuth, ...c, listen }, null, 2));
  write(config);
  const process = startProcess(
    `sidecar-${name}`,
    globalThis.process.execPath,
    [
      ...(options.nodeArgs ?? []),
      ...(options.built
        ? [...sidecarNodeOptions(DEFAULT_SIDECAR_RESOURCES.limits.memory).split(' '), BUILT_ENTRY]
        : ['--import', 'tsx', join(REPO_DIR, 'cli', 'main.ts')]),
      'sidecar',
      `--config=${file}`,
      '--advertise-address=127.0.0.1',
      `--instance-id=${name}`,
      '--admin-address=127.0.0.1',
      `--consul-address=${consulAddress}`,
      '--drain-seconds=2',
    ],
    join(dir, 'logs'),
  );
  const adminUrl = `http://127.0.0.1:${admin}`;
  // A sidecar that refuses to start fails the start at once, with what it said.
  let output = '';
  const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-8192));
  process.child.stdout?.on('data', keep);
  process.child.stderr?.on('data', keep);
  const gone = new Promise<never>((_, reject) =>
    process.child.once('close', (code) => reject(new Error(`sidecar ${name} exited (${code}):\n${output}`))),
  );
  try {
    await Promise.race([
      waitFor(`sidecar ${name} /healthz`, async () => (await fetch(`${adminUrl}/healthz`)).ok, 60_000),
      gone,
    ]);
  } catch (error) {
    await process.stop();
    if (!globalThis.process.env.AIMESH_KEEP_TESTENV) rmSync(dir, { recursive: true, force: true });
    throw error;
  } finally {
    process.child.stdout?.off('data', keep);
    process.child.stderr?.off('data', keep);
  }
  const token = controlAuth.tokenFile ? readFileSync(controlAuth.tokenFile, 'utf8').trim() : undefined;
  return {
    process,
    outbound: `http://127.0.0.1:${outbound}`,
    admin: adminUrl,
    control: `http://127.0.0.1:${control}`,
    controlGrpc: `127.0.0.1:${controlGrpc}`,
    controlAuth: token ? { authorization: `Bearer ${token}` } : {},
    reload: async (next) => {
      write(next);
      const expected = JSON.stringify(next.upstreams ?? []);
      await waitFor(
        `sidecar ${name} reloaded`,
        async () => {
          const served = (await (await fetch(`${adminUrl}/admin/config`)).json()) as { upstreams: unknown[] };
          return sameUpstreams(served.upstreams, JSON.parse(expected) as unknown[]);
        },
        15_000,
      );
    },
    stop: async () => {
      await process.stop();
      if (!globalThis.process.env.AIMESH_KEEP_TESTENV) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The served config has defaults filled in; compare the fields the test wrote. */
function sameUpstreams(served: unknown[], written: unknown[]): boolean {
  return served.length === written.length && written.every((w, i) => contains(served[i], w));
}

function contains(actual: unknown, expected: unknown): boolean {
  if (typeof expected !== 'object' || expected === null) return actual === expected;
  if (Array.isArray(expected))
    return Array.isArray(actual) && expected.every((e, i) => contains((actual as unknown[])[i], e));
  return Object.entries(expected).every(([k, v]) => contains((actual as Record<string, unknown>)?.[k], v));
}
