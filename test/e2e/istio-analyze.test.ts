import { afterAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { exampleSystems, renderFiles, synthesize } from '../../cli/synth.js';
import { validateFiles } from '../../cli/validate.js';
import { REPO_DIR } from '../env/components.js';
import { requireBinary, startControlPlane, waitFor, type ControlPlane } from '../env/index.js';
import { runCommand } from '../env/processes.js';
import { installOperatorIdentity, startOperator, type OperatorProcess } from './operator-process.js';

/**
 * Istio must accept aimesh's policies as a whole, not only one by one: `istioctl analyze`
 * (built from Istio's Go module by test/env) over every example's render, all namespaces
 * at once (`-A`: without it analyze looks at `default` only and reports nothing). Before
 * one VirtualService per host it reported IST0109 (several VirtualServices for one host).
 */
const out = mkdtempSync(join(tmpdir(), 'aimesh-analyze-'));
let cluster: ControlPlane | undefined;
let operator: OperatorProcess | undefined;

afterAll(async () => {
  rmSync(out, { recursive: true, force: true });
  await operator?.process.stop();
  await cluster?.stop();
});

describe('istioctl analyze', () => {
  it('finds no issue in what aimesh renders for every example', async () => {
    const result = synthesize(exampleSystems(join(REPO_DIR, 'examples')), out);
    expect(result.invalid).toEqual([]);
    const files = readdirSync(out).map((f) => join(out, f));
    expect(files.length).toBeGreaterThan(30);
    const analyzed = await runCommand(requireBinary('istioctl'), [
      'analyze',
      '--use-kube=false',
      '-A',
      ...files,
    ]);
    expect(analyzed.stderr + analyzed.stdout).toContain('No validation issues found');
    expect(analyzed.stdout + analyzed.stderr).not.toMatch(/IST\d{4}/);
    expect(analyzed.code).toBe(0);
  });

  it('finds no issue in the live objects the operator creates for every example', async () => {
    // Its own control plane (with Istio's CRDs): the operator watches every namespace and
    // analyze reads the whole cluster, so no other suite's objects may be in either.
    const live = await startControlPlane();
    cluster = live;
    operator = await startOperator(await installOperatorIdentity(live), 'analyze', join(live.dir, 'logs'));

    const reports = validateFiles(exampleSystems(join(REPO_DIR, 'examples')));
    expect(reports.filter((r) => r.errors.length > 0)).toEqual([]);
    const resources = reports.flatMap((r) => (r.resource ? [r.resource] : []));
    const istioObjects = renderFiles(resources)
      .flatMap((f) => f.objects)
      .filter((o) => o.apiVersion.includes('istio.io')).length;
    expect(istioObjects).toBeGreaterThan(30);
    // The examples ask for STRICT mTLS, so their namespaces are in the mesh, labelled as an
    // Istio user labels them; analyze then checks every policy's selector against the pods
    // the Deployments really create (IST0127 when none match).
    const namespaces = [...new Set(resources.map((r) => r.metadata.namespace ?? 'default'))];
    for (const namespace of namespaces.filter((n) => n !== 'default'))
      expect((await live.kubectl(['create', 'namespace', namespace])).code).toBe(0);
    for (const namespace of namespaces)
      expect((await live.kubectl(['label', 'namespace', namespace, 'istio-injection=enabled'])).code).toBe(0);
    const applied = await live.kubectl(
      ['apply', '--server-side', '-f', '-'],
      [...resources.map((r) => stringify(r)), LEGACY_NOTIFIER].join('---\n'),
    );
    expect(applied.stderr).toBe('');

    let created = 0;
    let deployments: Deployment[] = [];
    await waitFor(
      'the Istio objects and the pods of every Deployment',
      async () => {
        const got = await live.kubectl(['get', ISTIO_KINDS, '-A', '-o', 'name']);
        created = got.code === 0 ? got.stdout.trim().split('\n').filter(Boolean).length : 0;
        const listed = await live.kubectl(['get', 'deployments', '-A', '-o', 'json']);
        deployments = listed.code === 0 ? (JSON.parse(listed.stdout) as { items: Deployment[] }).items : [];
        return created === istioObjects && deployments.every(podsCreated);
      },
      180_000,
      // On a timeout the assertions below say what is missing.
    ).catch(() => undefined);
    expect(created).toBe(istioObjects);
    expect(deployments.filter((d) => !podsCreated(d)).map((d) => d.metadata.name)).toEqual([]);

    const analyzed = await runCommand(requireBinary('istioctl'), [
      'analyze',
      `--kubeconfig=${live.kubeconfig}`,
      '--use-kube=true',
      '-A',
      '--output=json',
    ]);
    expect(analyzed.code).toBe(0);
    const messages = JSON.parse(analyzed.stdout) as AnalysisMessage[];
    const issues = messages
      .filter((m) => m.level !== 'Info' && !allowed(m))
      .map((m) => `${m.level} ${m.code} ${m.origin}: ${m.message}`);
    expect(issues).toEqual([]);
  });
});

const ISTIO_KINDS = 'destinationrule,virtualservice,peerauthentication,authorizationpolicy';

/**
 * What analyze reports only because this cluster runs no istiod (so nothing injects
 * istio-proxy) and no kubelet: nothing aimesh renders can change these.
 */
const ALLOWED: { code: string; origin: RegExp; reason: string }[] = [
  {
    code: 'IST0103',
    origin: /^Pod /,
    reason: 'pods in injected namespaces lack istio-proxy: no istiod runs its injection webhook here',
  },
];

function allowed(message: AnalysisMessage): boolean {
  return ALLOWED.some((a) => a.code === message.code && a.origin.test(message.origin));
}

type AnalysisMessage = { code: string; level: 'Error' | 'Warning' | 'Info'; origin: string; message: string };
type Deployment = {
  metadata: { name: string };
  spec: { replicas?: number };
  status?: { replicas?: number };
};

function podsCreated(deployment: Deployment): boolean {
  return (deployment.status?.replicas ?? 0) === (deployment.spec.replicas ?? 1);
}

/**
 * The workload examples/chat-migration/legacy-notifier.yaml adopts: it runs from its own
 * Deployment, so the adopting AiService's policies select its pods.
 */
const LEGACY_NOTIFIER = `apiVersion: apps/v1
kind: Deployment
metadata: {name: notifier, namespace: chat-migration}
spec:
  selector: {matchLabels: {app: notifier}}
  template:
    metadata: {labels: {app: notifier}}
    spec:
      containers: [{name: notifier, image: registry.example.com/chat/notifier:3.2.0, ports: [{containerPort: 3200}]}]
`;
