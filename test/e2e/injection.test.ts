import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { get } from 'node:https';
import { join } from 'node:path';
import { parse } from 'yaml';
import { injectDocuments } from '../../cli/inject.js';
import { issueServing } from '../../operator/certs/pki.js';
import { REPO_DIR } from '../env/components.js';
import { startControlPlane, waitFor, type ControlPlane } from '../env/index.js';
import {
  FULLNAME,
  WEBHOOK_SECRET as SECRET,
  installWebhook,
  kubectlOf,
  run,
  startInjectingOperator,
  type InstalledWebhook,
} from './injection-webhook.js';
import { OPERATOR_NAMESPACE, type OperatorProcess } from './operator-process.js';

/**
 * The injection webhook against a real API server and controller-manager: the API server
 * calls the operator's admission server when the ReplicaSet controller creates pods. No
 * node runs, so the webhook cannot sit behind a Service: the chart's webhook configuration
 * is rendered with a `url:` clientConfig (webhook.url) at 127.0.0.1, and the operator's
 * certificate names 127.0.0.1.
 */
const NS = 'inject-e2e';
const PLAIN_NS = 'inject-e2e-plain';
const IMAGE = 'registry.example.com/aimesh:e2e';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

let cluster: ControlPlane;
let webhook: InstalledWebhook;
let operator: OperatorProcess;

async function kubectl(args: string[], input?: string): Promise<{ stdout: string; stderr: string }> {
  const result = await kubectlOf(cluster)(args, input);
  if (result.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${result.stderr}`);
  return result;
}

async function json(args: string[]): Promise<Json> {
  return JSON.parse((await kubectl([...args, '-o', 'json'])).stdout) as Json;
}

async function pods(namespace: string, selector: string): Promise<Json[]> {
  return (await json(['get', 'pods', '-n', namespace, '-l', selector])).items as Json[];
}

async function podsCreated(namespace: string, selector: string, count: number): Promise<Json[]> {
  let found: Json[] = [];
  await waitFor(`${count} pod(s) ${selector} in ${namespace}`, async () => {
    found = await pods(namespace, selector);
    return found.length >= count;
  });
  return found;
}

const sidecars = (pod: Json) =>
  [...(pod.spec.initContainers ?? []), ...pod.spec.containers].filter(
    (c: Json) => c.name === 'aimesh-sidecar',
  );

function deployment(
  name: string,
  extra: { annotations?: Json; labels?: Json; replicas?: number } = {},
): Json {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace: NS },
    spec: {
      replicas: extra.replicas ?? 1,
      strategy: { type: 'Recreate' },
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name, ...extra.labels }, annotations: extra.annotations ?? {} },
        spec: {
          containers: [
            { name: 'app', image: 'registry.example.com/app:1', ports: [{ containerPort: 8000 }] },
          ],
        },
      },
    },
  };
}

async function apply(object: Json): Promise<string> {
  return (await kubectl(['apply', '-f', '-'], JSON.stringify(object))).stderr;
}

/** The API server's own count of calls to our webhooks that failed open (failurePolicy Ignore). */
async function failedOpen(): Promise<number> {
  const metrics = (await kubectl(['get', '--raw', '/metrics'])).stdout;
  return metrics
    .split('\n')
    .filter(
      (l) => l.startsWith('apiserver_admission_webhook_fail_open_count') && l.includes('inject.aimesh.io'),
    )
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

/** Whether the admission server's certificate is one this CA signed (it answers GET with 405). */
function trustedBy(ca: string): Promise<boolean> {
  return new Promise((resolve) => {
    get({ host: '127.0.0.1', port: webhook.port, path: '/mutate/inject', ca, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 405);
    }).once('error', () => resolve(false));
  });
}

beforeAll(async () => {
  cluster = await startControlPlane();
  webhook = await installWebhook(cluster);
  await kubectl(['create', 'namespace', NS]);
  await kubectl(['label', 'namespace', NS, 'aimesh.io/inject=enabled']);
  await kubectl(['create', 'namespace', PLAIN_NS]);
  // Pods wait for their namespace's default ServiceAccount, which the controller-manager makes.
  for (const namespace of [NS, PLAIN_NS, 'kube-system'])
    await waitFor(`default ServiceAccount in ${namespace}`, async () => {
      return (await kubectlOf(cluster)(['get', 'serviceaccount', 'default', '-n', namespace])).code === 0;
    });
  operator = await startInjectingOperator(cluster, webhook, IMAGE);
});

afterAll(async () => {
  await operator?.process.stop();
  await cluster?.stop();
});

describe('sidecar injection webhook on a real API server', () => {
  it('injects pods of a labelled namespace, exactly as aimesh inject does, and leaves opted-out pods alone', async () => {
    const web = deployment('web', {
      annotations: { 'aimesh.io/upstreams': 'rag, users:least-request' },
      replicas: 2,
    });
    await apply(web);
    await apply(deployment('legacy', { labels: { 'aimesh.io/inject': 'disabled' } }));
    const injected = await podsCreated(NS, 'app=web', 2);
    const [legacy] = await podsCreated(NS, 'app=legacy', 1);
    expect(sidecars(legacy as Json)).toEqual([]);

    const offline = injectDocuments([web], { sidecarImage: IMAGE, nativeSidecar: true, namespace: NS });
    const template = (offline.documents[0] as Json).spec.template;
    for (const pod of injected) {
      expect(sidecars(pod)).toHaveLength(1);
      // What the API server stored contains what aimesh inject writes (plus its defaults).
      // The API server's ServiceAccount plugin runs again after the webhook and mounts the
      // pod's token into every container, the sidecar too.
      const sidecar = pod.spec.initContainers[0] as Json;
      sidecar.volumeMounts = sidecar.volumeMounts.filter((m: Json) => !m.name.startsWith('kube-api-access'));
      expect(sidecar).toMatchObject(template.spec.initContainers[0]);
      expect(pod.spec.volumes.filter((v: Json) => v.name.startsWith('aimesh-'))).toMatchObject(
        template.spec.volumes,
      );
      expect(pod.spec.containers[0].env).toEqual(template.spec.containers[0].env);
      const ours = (annotations: Json) =>
        Object.fromEntries(Object.entries(annotations).filter(([k]) => /^(aimesh|prometheus)\.io\//.test(k)));
      expect(ours(pod.metadata.annotations)).toEqual(ours(template.metadata.annotations));
    }
  });

  it('does not inject a pod twice, never touches kube-system, and honours a pod that opts in itself', async () => {
    const pod = (name: string, namespace: string, labels: Json = {}) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace, labels: { app: name, ...labels } },
      spec: { containers: [{ name: 'app', image: 'registry.example.com/app:1' }] },
    });
    const already = injectDocuments([pod('pre-injected', NS)], {
      sidecarImage: IMAGE,
      nativeSidecar: true,
      namespace: NS,
    }).documents[0] as Json;
    await apply(already);
    await kubectl(['label', 'namespace', 'kube-system', 'aimesh.io/inject=enabled']);
    await apply(pod('system', 'kube-system'));
    await apply(pod('self', PLAIN_NS, { 'aimesh.io/inject': 'enabled' }));
    await apply(pod('other', PLAIN_NS));

    const stored = await json(['get', 'pod', 'pre-injected', '-n', NS]);
    expect(sidecars(stored)).toHaveLength(1);
    expect(stored.metadata.annotations['aimesh.io/sidecar-config']).toBe(
      already.metadata.annotations['aimesh.io/sidecar-config'],
    );
    expect(sidecars(await json(['get', 'pod', 'system', '-n', 'kube-system']))).toEqual([]);
    expect(sidecars(await json(['get', 'pod', 'self', '-n', PLAIN_NS]))).toHaveLength(1);
    expect(sidecars(await json(['get', 'pod', 'other', '-n', PLAIN_NS]))).toEqual([]);
    await kubectl(['label', 'namespace', 'kube-system', 'aimesh.io/inject-']);
  });

  it('answers bad annotations with warnings and no injection, never a broken pod', async () => {
    const stderr = await apply({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: 'bad-annotations',
        namespace: NS,
        annotations: { 'aimesh.io/upstreams': 'rag:fastest', 'aimesh.io/app-port': 'http' },
      },
      spec: { containers: [{ name: 'app', image: 'registry.example.com/app:1' }] },
    });
    expect(stderr).toContain('Warning: aimesh: not injected: annotation aimesh.io/app-port="http"');
    expect(stderr).toContain('unknown strategy "fastest"');
    expect(sidecars(await json(['get', 'pod', 'bad-annotations', '-n', NS]))).toEqual([]);
  });

  it('replaces an expired serving certificate and a lost CA while the API server keeps calling it', async () => {
    const failuresBefore = await failedOpen();
    const secret = await json(['get', 'secret', SECRET, '-n', OPERATOR_NAMESPACE]);
    const decode = (key: string) => Buffer.from(secret.data[key] as string, 'base64').toString();
    const ca = { cert: decode('ca.crt'), key: decode('ca.key') };
    const longAgo = Date.now() - 100 * 24 * 3_600_000;
    const expired = await issueServing(ca, ['127.0.0.1'], longAgo, { caHours: 24 * 3650, servingHours: 1 });
    const encode = (text: string) => Buffer.from(text).toString('base64');
    const data = { 'tls.crt': encode(expired.cert), 'tls.key': encode(expired.key) };
    await kubectl([
      'patch',
      'secret',
      SECRET,
      '-n',
      OPERATOR_NAMESPACE,
      '--type=merge',
      '-p',
      JSON.stringify({ data }),
    ]);
    await waitFor('the expired certificate replaced', async () => {
      const current = await json(['get', 'secret', SECRET, '-n', OPERATOR_NAMESPACE]);
      const cert = Buffer.from(current.data['tls.crt'] as string, 'base64').toString();
      return cert !== expired.cert && cert !== decode('tls.crt');
    });
    await apply(deployment('after-renewal'));
    expect(sidecars((await podsCreated(NS, 'app=after-renewal', 1))[0] as Json)).toHaveLength(1);

    // A lost CA: the operator makes a new one and puts it into the caBundle.
    const bundleBefore = (await json(['get', 'mutatingwebhookconfiguration', FULLNAME])).webhooks[0]
      .clientConfig.caBundle as string;
    await kubectl([
      'patch',
      'secret',
      SECRET,
      '-n',
      OPERATOR_NAMESPACE,
      '--type=json',
      '-p',
      '[{"op":"remove","path":"/data"}]',
    ]);
    await waitFor('a new CA in the caBundle', async () => {
      const configuration = await json(['get', 'mutatingwebhookconfiguration', FULLNAME]);
      return configuration.webhooks.every(
        (w: Json) => w.clientConfig.caBundle && w.clientConfig.caBundle !== bundleBefore,
      );
    });
    const newCa = Buffer.from(
      (await json(['get', 'secret', SECRET, '-n', OPERATOR_NAMESPACE])).data['ca.crt'] as string,
      'base64',
    ).toString();
    await waitFor('a certificate of the new CA served', () => trustedBy(newCa));
    await apply(deployment('after-new-ca'));
    expect(sidecars((await podsCreated(NS, 'app=after-new-ca', 1))[0] as Json)).toHaveLength(1);
    expect(await failedOpen()).toBe(failuresBefore);
  });

  it('reports pods created while the webhook was down, and injects them after a rollout restart', async () => {
    // The AiService first: while no replica answers, the validating webhook (failurePolicy
    // Fail, AiServices and Sagas only) refuses changes to aimesh's own kinds, as it should.
    await apply({
      apiVersion: 'aimesh.io/v1alpha1',
      kind: 'AiService',
      metadata: { name: 'late', namespace: NS },
      spec: { port: 8000, workload: { selector: { matchLabels: { app: 'late' } } } },
    });
    await operator.process.stop();
    const refused = await kubectlOf(cluster)(
      ['apply', '--server-side', '-f', '-'],
      JSON.stringify({
        apiVersion: 'aimesh.io/v1alpha1',
        kind: 'AiService',
        metadata: { name: 'while-down', namespace: NS },
        spec: { image: 'registry.example.com/x:1' },
      }),
    );
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('resources.validate.aimesh.io');
    await apply(deployment('late'));
    const [missed] = await podsCreated(NS, 'app=late', 1);
    expect(sidecars(missed as Json)).toEqual([]);
    expect(await failedOpen()).toBeGreaterThan(0);

    operator = await startInjectingOperator(cluster, webhook, IMAGE);
    await waitFor('a SidecarMissing event', async () => {
      const events = (await json(['get', 'events', '-n', NS])).items as Json[];
      return events.some(
        (e) =>
          e.reason === 'SidecarMissing' &&
          e.involvedObject.kind === 'ReplicaSet' &&
          String(e.message).includes('kubectl rollout restart deployment/late'),
      );
    });
    expect(
      await operator.counter('aimesh_operator_pods_without_sidecar', (l) => l.includes(NS)),
    ).toBeGreaterThan(0);
    const condition = async () =>
      ((await json(['get', 'aiservice', 'late', '-n', NS])).status?.conditions ?? []).find(
        (c: Json) => c.type === 'SidecarInjected',
      ) as Json | undefined;
    await waitFor(
      'SidecarInjected=False on the adopting AiService',
      async () => (await condition())?.status === 'False',
    );
    expect((await condition())?.message).toContain('kubectl rollout restart deployment/late');

    const doctor = await run(
      process.execPath,
      [
        '--import',
        'tsx',
        join(REPO_DIR, 'cli', 'main.ts'),
        'doctor',
        `--kubeconfig=${cluster.kubeconfig}`,
        `--namespace=${NS}`,
      ],
      {},
    );
    expect(doctor.code).toBe(1);
    expect(doctor.stdout).toContain(`pod ${NS}/${(missed as Json).metadata.name} (AiService late)`);
    expect(doctor.stdout).toContain(`fix: kubectl rollout restart deployment/late -n ${NS}`);
    expect(doctor.stdout).toContain(
      'pod inject-e2e/bad-annotations runs without the aimesh sidecar: the webhook refused it',
    );

    await kubectl(['rollout', 'restart', 'deployment/late', '-n', NS]);
    await waitFor('the restarted pod injected', async () => {
      const current = await pods(NS, 'app=late');
      return current.length === 1 && sidecars(current[0] as Json).length === 1;
    });
    const [restarted] = await pods(NS, 'app=late');
    expect((restarted as Json).metadata.annotations['aimesh.io/injected']).toBe('aiservice/late');
    expect((restarted as Json).spec.volumes).toContainEqual(
      expect.objectContaining({
        name: 'aimesh-config',
        configMap: expect.objectContaining({ name: 'late-sidecar' }),
      }),
    );
    await waitFor('SidecarInjected=True again', async () => (await condition())?.status === 'True');
  });
});

describe('the validating webhook for AiService and Saga on a real API server', () => {
  it('refuses every invalid example with the message of aimesh validate, including what CEL cannot check', async () => {
    const expected = parse(readFileSync(join(REPO_DIR, 'examples', 'invalid', 'expected.yaml'), 'utf8')) as {
      file: string;
      field: string;
      schemaError: string;
      apiServerError: string | null;
    }[];
    expect(expected.some((e) => e.apiServerError === null)).toBe(true);
    for (const entry of expected) {
      const text = readFileSync(join(REPO_DIR, 'examples', 'invalid', entry.file), 'utf8');
      const namespace = (parse(text) as { metadata?: { namespace?: string } }).metadata?.namespace ?? NS;
      const applied = await kubectlOf(cluster)(
        ['apply', '--server-side', '-n', NS, '-f', '-'],
        text.replace(
          /^ {2}namespace: .*$/m,
          // Every example is applied in the test namespace (it exists); a bad namespace stays bad.
          /^[a-z0-9-]+$/.test(namespace) ? `  namespace: ${NS}` : `  namespace: ${namespace}`,
        ),
      );
      expect({ file: entry.file, refused: applied.code !== 0 }).toEqual({ file: entry.file, refused: true });
      // The schema and CEL run first; what gets past them is the webhook's to refuse, in aimesh validate's words.
      if (entry.apiServerError === null) {
        expect(applied.stderr).toContain('resources.validate.aimesh.io');
        expect(applied.stderr).toContain(`${entry.field}: ${entry.schemaError}`);
      }
    }
  });
});
