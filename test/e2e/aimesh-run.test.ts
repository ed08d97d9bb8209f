import { afterAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_DIR } from '../env/components.js';
import { freePorts, startProcess, waitFor, type ManagedProcess } from '../env/index.js';

/**
 * `aimesh run` on one machine: two apps, each with its own sidecar, find each other in the
 * local file registry, with no cluster and no Consul.
 */
const dir = mkdtempSync(join(tmpdir(), 'aimesh-run-'));
const registry = join(dir, 'registry');
const running: ManagedProcess[] = [];

async function configFor(name: string, appPort: number, upstreams: string[]): Promise<string> {
  const [outbound, admin, control, controlGrpc] = (await freePorts(4)) as number[];
  const file = join(dir, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      service: { name, port: appPort, healthCheck: { path: '/healthz' } },
      listen: { outbound, admin, control, controlGrpc },
      discovery: { mode: 'local' },
      upstreams: upstreams.map((u) => ({ name: u })),
    }),
  );
  return file;
}

const cli = (args: string[]) =>
  [process.execPath, ['--import', 'tsx', join(REPO_DIR, 'cli', 'main.ts'), 'run', ...args]] as const;

afterAll(async () => {
  for (const process of running) await process.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('aimesh run', () => {
  it('runs two apps with their sidecars on one machine; one calls the other through its sidecar', async () => {
    const [greeterPort] = (await freePorts(1)) as number[];
    const greeterServer = `require('node:http').createServer((q, s) => s.end(q.url === '/healthz' ? 'ok' : 'hello from greeter on ' + process.env.PORT)).listen(Number(process.env.PORT), '127.0.0.1')`;
    const [command, args] = cli([
      `--config=${await configFor('greeter', greeterPort as number, [])}`,
      `--registry=${registry}`,
      '--',
      process.execPath,
      '-e',
      greeterServer,
    ]);
    const greeter = startProcess('aimesh-run-greeter', command, [...args], join(dir, 'logs'));
    running.push(greeter);
    await waitFor(
      'greeter registered locally',
      async () =>
        existsSync(join(registry, 'greeter')) && readdirSync(join(registry, 'greeter')).length === 1,
      30_000,
    );

    const callerScript = `fetch(process.env.AIMESH_OUTBOUND + '/v1/invoke/greeter/hi').then(r => r.text()).then(t => { console.log('caller got: ' + t); process.exit(0); }, e => { console.error(e); process.exit(3); })`;
    const [callerCommand, callerArgs] = cli([
      `--config=${await configFor('caller', 1, ['greeter'])}`,
      `--registry=${registry}`,
      '--',
      process.execPath,
      '-e',
      // Give the caller's sidecar a moment to read the registry.
      `setTimeout(() => { ${callerScript} }, 1500)`,
    ]);
    const caller = spawn(callerCommand, [...callerArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    caller.stdout.on('data', (d: Buffer) => (output += d.toString()));
    caller.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const code = await new Promise<number | null>((resolve) => caller.once('exit', resolve));
    expect(output).toContain(`caller got: hello from greeter on ${greeterPort}`);
    expect(code).toBe(0);

    // Stopping `aimesh run` stops the app and removes its registration.
    greeter.child.kill('SIGTERM');
    await greeter.exited;
    expect(readdirSync(join(registry, 'greeter'))).toEqual([]);
  });

  it('refuses a config that is not for one machine, saying what to change', async () => {
    const file = join(dir, 'consul.json');
    writeFileSync(file, JSON.stringify({ service: { name: 'x', port: 1 }, discovery: { mode: 'consul' } }));
    const [command, args] = cli([`--config=${file}`, '--', process.execPath, '-e', '']);
    const child = spawn(command, [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toContain('set discovery.mode to local (it is consul)');
  });
});
