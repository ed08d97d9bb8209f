import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AIMESH_VERSION } from '../api/index.js';
import { describe } from '../lib/errors/index.js';
import type { ConsulDefaults } from '../render/index.js';
import { COMMANDS, UsageError, commandHelp, overview } from './help.js';

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (command !== undefined && COMMANDS[command] && wantsHelp(args)) return printHelp(command);
  switch (command) {
    case 'validate':
      if (args.length === 0) throw new UsageError('validate needs at least one file, folder or "-"', command);
      // Loaded on demand, like every command: validate brings the YAML parser, which the
      // sidecar and the operator never need in memory.
      return (await import('./validate.js')).runValidate(args);
    case 'operator':
      return runOperatorCommand(args);
    case 'render':
      return runRenderCommand(args);
    case 'sidecar':
      return runSidecarCommand(args);
    case 'run': {
      const { runApp } = await import('./run.js');
      return runApp(args);
    }
    case 'doctor': {
      const { runDoctor } = await import('./doctor.js');
      return runDoctor(args);
    }
    case 'inject': {
      const { runInject } = await import('./inject.js');
      return runInject(args);
    }
    case 'saga': {
      if (args[0] !== 'proto') throw new UsageError('the saga command has one subcommand: proto', command);
      const { SAGA_PROTO } = await (await import('../sidecar/saga/index.js')).loadSagaGrpc();
      process.stdout.write(SAGA_PROTO);
      return 0;
    }
    case 'crds': {
      const { generatedFiles } = await import('../tools/generated.js');
      process.stdout.write(
        Object.entries(generatedFiles())
          .filter(([path]) => path.startsWith('crds/'))
          .map(([, content]) => content)
          .join('---\n'),
      );
      return 0;
    }
    case 'version':
    case '--version':
      process.stdout.write(`${AIMESH_VERSION}\n`);
      return 0;
    case 'help':
      return args[0] === undefined ? printHelp(undefined) : printHelp(args[0]);
    case '--help':
    case '-h':
      return printHelp(undefined);
    case undefined:
      process.stderr.write(overview());
      return 2;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

/** `--help` or `-h` among a command's own arguments (not those after `--`, which are an app's). */
function wantsHelp(args: string[]): boolean {
  const own = args.includes('--') ? args.slice(0, args.indexOf('--')) : args;
  return own.includes('--help') || own.includes('-h');
}

function printHelp(command: string | undefined): number {
  if (command === undefined) {
    process.stdout.write(overview());
    return 0;
  }
  const page = commandHelp(command);
  if (!page) throw new UsageError(`unknown command "${command}"`);
  process.stdout.write(page);
  return 0;
}

async function runOperatorCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string' },
      'probe-address': { type: 'string', default: '0.0.0.0:8081' },
      'leader-elect': { type: 'string', default: 'true' },
      'lease-namespace': { type: 'string', default: process.env.POD_NAMESPACE ?? 'default' },
      'lease-name': { type: 'string', default: 'aimesh-operator' },
      identity: { type: 'string' },
      workers: { type: 'string', default: '8' },
      'sidecar-image': { type: 'string' },
      'webhook-address': { type: 'string', default: '' },
      'webhook-secret': { type: 'string', default: 'aimesh-webhook-tls' },
      'webhook-configuration': { type: 'string', default: 'aimesh-sidecar-injector' },
      'webhook-hosts': { type: 'string', default: '' },
      'webhook-certificates': { type: 'string', default: 'operator' },
      'webhook-cert-check-seconds': { type: 'string', default: '60' },
      'miss-scan-seconds': { type: 'string', default: '60' },
      'consul-address': { type: 'string' },
      'consul-datacenter': { type: 'string' },
      'consul-token-secret': { type: 'string' },
      'consul-ca-secret': { type: 'string' },
      'consul-tls-server-name': { type: 'string' },
    },
  });
  const consul = consulDefaults(values);
  const [host, port] = splitAddress(values['probe-address']);
  const webhook = values['webhook-address'] ? webhookOptions(values) : undefined;
  const workers = Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1)
    throw new UsageError('--workers must be a whole number of at least 1', 'operator');
  const { runOperator } = await import('../operator/index.js');
  const operator = await runOperator({
    kubeconfig: values.kubeconfig,
    namespace: values.namespace,
    probeHost: host,
    probePort: port,
    leaderElection: values['leader-elect'] !== 'false',
    leaseNamespace: values['lease-namespace'],
    leaseName: values['lease-name'],
    identity: values.identity ?? process.env.POD_NAME,
    workers,
    sidecarImage: values['sidecar-image'],
    ...(webhook ? { webhook } : {}),
    ...(consul ? { consul } : {}),
  });
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => resolve());
  });
  await operator.stop();
  return typeof process.exitCode === 'number' ? process.exitCode : 0;
}

async function runRenderCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      out: { type: 'string', default: 'dist/manifests' },
      namespace: { type: 'string' },
      'sidecar-image': { type: 'string' },
      'no-istio': { type: 'boolean', default: false },
    },
  });
  if (positionals.length === 0)
    throw new UsageError('render needs at least one file, folder or "-"', 'render');
  const { synthesize, printSynthResult } = await import('./synth.js');
  const result = synthesize(
    positionals,
    values.out,
    {
      ...(values.namespace ? { namespace: values.namespace } : {}),
      ...(values['sidecar-image'] ? { sidecarImage: values['sidecar-image'] } : {}),
      ...(values['no-istio'] ? { istio: false } : {}),
    },
    progress,
  );
  printSynthResult(result, values.out);
  return result.invalid.length > 0 ? 1 : 0;
}

async function runSidecarCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string' },
      'advertise-address': { type: 'string', default: process.env.POD_IP ?? '127.0.0.1' },
      'instance-id': { type: 'string' },
      'admin-address': { type: 'string', default: '0.0.0.0' },
      'consul-address': { type: 'string', default: process.env.CONSUL_HTTP_ADDR },
      'drain-seconds': { type: 'string', default: '10' },
      'local-registry': { type: 'string' },
    },
  });
  if (!values.config)
    throw new UsageError('sidecar needs --config <file> (the sidecar config the operator writes)', 'sidecar');
  const drainSeconds = Number(values['drain-seconds']);
  if (!Number.isFinite(drainSeconds) || drainSeconds < 0)
    throw new UsageError('--drain-seconds must be a number of seconds, e.g. 10', 'sidecar');
  const { runSidecar } = await import('../sidecar/index.js');
  const podName = process.env.POD_NAME;
  const sidecar = await runSidecar({
    configFile: values.config,
    advertiseAddress: values['advertise-address'],
    ...(values['instance-id']
      ? { instanceId: values['instance-id'] }
      : podName
        ? { instanceId: podName }
        : {}),
    adminAddress: values['admin-address'],
    ...(values['consul-address'] ? { consulAddress: values['consul-address'] } : {}),
    drainMs: drainSeconds * 1000,
    ...(values['local-registry'] ? { localRegistry: values['local-registry'] } : {}),
  });
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => resolve());
  });
  await sidecar.stop();
  return 0;
}

/** Render progress on a terminal, one line rewritten in place; nothing when piped. */
function progress(done: number, total: number, name: string): void {
  if (!process.stderr.isTTY || total < 2) return;
  process.stderr.write(`\rrendering ${done + 1}/${total} ${name}\x1b[K`);
  if (done + 1 === total) process.stderr.write('\r\x1b[K');
}

function webhookOptions(values: Record<string, string | boolean | undefined>) {
  const [host, port] = splitAddress(String(values['webhook-address']), '--webhook-address');
  const hosts = String(values['webhook-hosts'])
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean);
  if (hosts.length === 0)
    throw new UsageError(
      '--webhook-hosts must list the names the API server dials the webhook by, e.g. aimesh-webhook.aimesh-system.svc',
    );
  const mode = values['webhook-certificates'];
  if (mode !== 'operator' && mode !== 'external')
    throw new UsageError(
      '--webhook-certificates must be operator (the operator issues them) or external (cert-manager)',
    );
  const seconds = (flag: string) => {
    const value = Number(values[flag]);
    if (!Number.isFinite(value) || value < 1)
      throw new UsageError(`--${flag} must be a number of seconds, at least 1`);
    return value;
  };
  return {
    host,
    port,
    secretName: String(values['webhook-secret']),
    configurationName: String(values['webhook-configuration']),
    hosts,
    manageCertificates: mode === 'operator',
    certCheckIntervalMs: seconds('webhook-cert-check-seconds') * 1000,
    missScanIntervalMs: seconds('miss-scan-seconds') * 1000,
  };
}

/**
 * The cluster's Consul from the operator's flags; Secrets are `name/key`, read from each
 * AiService's own namespace (a Secret cannot be mounted across namespaces).
 */
function consulDefaults(values: Record<string, string | boolean | undefined>): ConsulDefaults | undefined {
  const secret = (flag: string) => {
    const value = values[flag];
    if (typeof value !== 'string' || value === '') return undefined;
    const [name, key, ...rest] = value.split('/');
    if (!name || !key || rest.length > 0)
      throw new UsageError(`--${flag} must be <secret-name>/<key> (got "${value}")`, 'operator');
    return { name, key };
  };
  const text = (flag: string) =>
    typeof values[flag] === 'string' && values[flag] !== '' ? values[flag] : undefined;
  const defaults: ConsulDefaults = {
    ...(text('consul-address') ? { address: text('consul-address') } : {}),
    ...(text('consul-datacenter') ? { datacenter: text('consul-datacenter') } : {}),
    ...(secret('consul-token-secret') ? { tokenSecretRef: secret('consul-token-secret') } : {}),
    ...(secret('consul-ca-secret') ? { caSecretRef: secret('consul-ca-secret') } : {}),
    ...(text('consul-tls-server-name') ? { serverName: text('consul-tls-server-name') } : {}),
  };
  return Object.keys(defaults).length > 0 ? defaults : undefined;
}

function splitAddress(address: string, flag = '--probe-address'): [string, number] {
  const at = address.lastIndexOf(':');
  const port = Number(address.slice(at + 1));
  if (at < 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`${flag} must be host:port, e.g. 127.0.0.1:8081 (got "${address}")`, 'operator');
  }
  return [address.slice(0, at), port];
}

/** Runs one `aimesh` command line (without the program name) and returns its exit code. */
export async function runCli(argv: string[]): Promise<number> {
  try {
    return await main(argv);
  } catch (error) {
    return report(error, argv[0]);
  }
}

/**
 * The exit codes in help.ts: 2 for a command line that cannot run, 1 for anything else.
 * Only the message is printed; a stack trace or an error object is for aimesh's bugs.
 */
function report(error: unknown, command: string | undefined): number {
  if (error instanceof UsageError || isParseArgsError(error)) {
    const about = error instanceof UsageError ? error.command : command;
    const hint = about && commandHelp(about) ? `aimesh ${about} --help` : 'aimesh help';
    process.stderr.write(`aimesh: ${(error as Error).message}\nrun "${hint}" for usage\n`);
    return 2;
  }
  process.stderr.write(`aimesh: ${describe(error)}\n`);
  return 1;
}

/** node:util parseArgs refuses unknown flags and missing values with these codes. */
function isParseArgsError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS');
}

// Run as a program (`tsx cli/main.ts`, how the tests and `npm run aimesh` start it); the
// installed `aimesh` goes through bin.ts, which checks the Node version first.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await runCli(process.argv.slice(2));
}
