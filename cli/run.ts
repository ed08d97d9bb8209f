/**
 * `aimesh run --config <sidecar config> -- <command> [args...]`: one app and its sidecar
 * on one machine, no cluster and no Consul (like `dapr run`). The sidecar registers the
 * app in the local file registry and finds the others there; the app gets
 * AIMESH_OUTBOUND (and OPENAI_BASE_URL when it has providers) in its environment. When the
 * app exits, the sidecar drains and stops; SIGINT/SIGTERM go to the app first.
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { loadSidecarConfig } from '../sidecar/config/index.js';
import { UsageError } from './help.js';

export async function runApp(argv: string[]): Promise<number> {
  const separator = argv.indexOf('--');
  const { values } = parseArgs({
    args: separator === -1 ? argv : argv.slice(0, separator),
    options: {
      config: { type: 'string' },
      registry: { type: 'string' },
      'drain-seconds': { type: 'string', default: '5' },
    },
  });
  const command = separator === -1 ? [] : argv.slice(separator + 1);
  if (!values.config || command.length === 0) {
    throw new UsageError('run needs --config <sidecar config> and -- <command> [args...]', 'run');
  }
  const loaded = loadSidecarConfig(values.config);
  if (!loaded.ok) throw new Error(`invalid sidecar config:\n  ${loaded.errors.join('\n  ')}`);
  if (loaded.config.discovery.mode !== 'local') {
    // A config for a cluster given to the one-machine command: a usage error (exit 2).
    throw new UsageError(
      `${values.config}: aimesh run works on one machine; set discovery.mode to local (it is ${loaded.config.discovery.mode})`,
      'run',
    );
  }
  const { runSidecar } = await import('../sidecar/index.js');
  const sidecar = await runSidecar({
    configFile: values.config,
    advertiseAddress: '127.0.0.1',
    adminAddress: '127.0.0.1',
    drainMs: Number(values['drain-seconds']) * 1000,
    ...(values.registry ? { localRegistry: values.registry } : {}),
  });
  const outbound = `http://127.0.0.1:${sidecar.outboundPort}`;
  const app = spawn(command[0] as string, command.slice(1), {
    stdio: 'inherit',
    env: {
      ...process.env,
      PORT: String(loaded.config.service.port),
      AIMESH_OUTBOUND: outbound,
      ...(loaded.config.providers.length > 0 ? { OPENAI_BASE_URL: `${outbound}/v1/ai` } : {}),
      // As in a pod: the app finds the saga control API token where the sidecar keeps it.
      ...(loaded.config.controlAuth.tokenFile
        ? { AIMESH_CONTROL_TOKEN_FILE: loaded.config.controlAuth.tokenFile }
        : {}),
    },
  });
  const forward = (signal: NodeJS.Signals) => () => app.kill(signal);
  process.on('SIGINT', forward('SIGINT'));
  process.on('SIGTERM', forward('SIGTERM'));
  const code = await new Promise<number>((resolve) => {
    app.once('error', (error) => {
      process.stderr.write(`aimesh run: could not start ${command[0]}: ${error.message}\n`);
      resolve(127);
    });
    app.once('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 128 : 1)));
  });
  await sidecar.stop();
  return code;
}
