#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { runValidate } from './validate.js';

const USAGE = `usage: aimesh <command> [arguments]

commands:
  validate <file-or-folder>...   check AiService and Saga resources against the aimesh.io/v1alpha1 schemas
  render [--out dir] <file-or-folder>...
                                 write the objects the operator would apply for each AiService (default dir:
                                 dist/manifests); the same render function as the operator and cdk8s synth
  operator [flags]               run the controller (flags: --kubeconfig, --namespace, --probe-address,
                                 --leader-elect=false, --lease-namespace, --workers, --sidecar-image;
                                 admission server: --webhook-address, --webhook-hosts, --webhook-secret,
                                 --webhook-configuration, --webhook-certificates=operator|external,
                                 --webhook-cert-check-seconds, --miss-scan-seconds)
  sidecar --config <file> [flags]
                                 run the sidecar (flags: --advertise-address, --instance-id,
                                 --admin-address, --consul-address, --drain-seconds, --local-registry)
  run --config <file> -- <command> [args...]
                                 run an app and its sidecar on one machine (local registry, no cluster)
  inject [flags] <file|folder|->...
                                 add the sidecar the injection webhook would add to every pod template in
                                 the YAML (flags: --kube-version, --sidecar-image, --namespace); report on stderr
  doctor [--kubeconfig f] [--namespace ns]
                                 list pods that should run the aimesh sidecar but do not, why, and the fix
                                 (kubectl rollout restart ...); check the webhook configuration
  saga proto                     print the .proto of the saga gRPC API (port 4703), to generate clients
  crds                           print the CustomResourceDefinitions as YAML
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  switch (command) {
    case 'validate':
      return runValidate(args);
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
      if (args[0] !== 'proto') throw new UsageError('usage: aimesh saga proto');
      const { SAGA_PROTO } = await import('../sidecar/saga/index.js');
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
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`aimesh: unknown command "${command}"\n${USAGE}`);
      return 2;
  }
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
      workers: { type: 'string', default: '2' },
      'sidecar-image': { type: 'string' },
      'webhook-address': { type: 'string', default: '' },
      'webhook-secret': { type: 'string', default: 'aimesh-webhook-tls' },
      'webhook-configuration': { type: 'string', default: 'aimesh-sidecar-injector' },
      'webhook-hosts': { type: 'string', default: '' },
      'webhook-certificates': { type: 'string', default: 'operator' },
      'webhook-cert-check-seconds': { type: 'string', default: '60' },
      'miss-scan-seconds': { type: 'string', default: '60' },
    },
  });
  const [host, port] = splitAddress(values['probe-address']);
  const webhook = values['webhook-address'] ? webhookOptions(values) : undefined;
  const workers = Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1)
    throw new UsageError('--workers must be a whole number of at least 1');
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
    options: { out: { type: 'string', default: 'dist/manifests' } },
  });
  if (positionals.length === 0) throw new UsageError('render needs at least one file or folder');
  const { synthesize, printSynthResult } = await import('./synth.js');
  const result = synthesize(positionals, values.out);
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
    throw new UsageError('sidecar needs --config <file> (the sidecar config the operator writes)');
  const drainSeconds = Number(values['drain-seconds']);
  if (!Number.isFinite(drainSeconds) || drainSeconds < 0)
    throw new UsageError('--drain-seconds must be a number of seconds, e.g. 10');
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

class UsageError extends Error {}

function splitAddress(address: string, flag = '--probe-address'): [string, number] {
  const at = address.lastIndexOf(':');
  const port = Number(address.slice(at + 1));
  if (at < 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`${flag} must be host:port, e.g. 127.0.0.1:8081 (got "${address}")`);
  }
  return [address.slice(0, at), port];
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`aimesh: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 2;
}
