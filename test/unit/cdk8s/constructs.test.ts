/**
 * The cdk8s constructs: the custom resources they emit, synth-time validation with the
 * API's own messages, typed saga references, and rendered mode, which must emit exactly
 * what `aimesh render` (the operator's render and input gathering) gives for the same
 * resources.
 */
import { describe, expect, it } from '@jest/globals';
import { App, Testing } from 'cdk8s';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { AiServiceInput, SagaInput } from '../../../api/index.js';
import {
  AiService,
  AimeshChart,
  Saga,
  type AiServiceSpecProps,
  type AimeshChartMode,
  type SagaSpecInput,
  type SagaStepProps,
} from '../../../cdk8s/index.js';
import { renderFiles } from '../../../cli/synth.js';
import { validateFiles } from '../../../cli/validate.js';
import { REPO_DIR } from '../../env/components.js';

const SUOKE = join(REPO_DIR, 'examples', 'suoke-life');

const api = {
  apiVersion: 'aimesh.io/v1alpha1',
  kind: 'AiService',
};

function minimal(app: App, mode: AimeshChartMode = 'custom-resources') {
  const chart = new AimeshChart(app, 'shop', { namespace: 'shop', mode });
  const orders = new AiService(chart, 'orders', { spec: { image: 'example/orders:1', port: 8080 } });
  const payments = new AiService(chart, 'payments', { spec: { image: 'example/payments:1', port: 8080 } });
  new Saga(chart, 'checkout', {
    spec: {
      orchestrator: orders,
      steps: [
        {
          name: 'charge',
          action: { service: payments, path: '/charges', body: { order: '{{ input.order }}' } },
          compensation: { service: payments, method: 'DELETE', path: '/charges/{{ input.order }}' },
        },
        { name: 'notify', action: { service: { kubernetesService: 'mailer' }, path: '/send' } },
      ],
    },
  });
  return chart;
}

/** The example system's YAML as constructs, saga services resolved to the AiService constructs. */
function suokeAsConstructs(mode: AimeshChartMode): AimeshChart {
  const app = Testing.app();
  const chart = new AimeshChart(app, 'suoke', { mode });
  const documents = readExample(SUOKE);
  const services = new Map<string, AiService>();
  for (const doc of documents.filter((d): d is AiServiceInput => d.kind === 'AiService')) {
    const { name, namespace, labels, annotations } = doc.metadata;
    services.set(name, new AiService(chart, name, { namespace, labels, annotations, spec: doc.spec }));
  }
  const ref = (name: string) => services.get(name) ?? { kubernetesService: name };
  for (const doc of documents.filter((d): d is SagaInput => d.kind === 'Saga')) {
    const { orchestrator, steps, ...spec } = doc.spec;
    const typedSteps: SagaStepProps[] = steps.map(({ action, compensation, ...step }) => ({
      ...step,
      action: { ...action, service: ref(action.service) },
      ...(compensation ? { compensation: { ...compensation, service: ref(compensation.service) } } : {}),
    }));
    new Saga(chart, doc.metadata.name, {
      namespace: doc.metadata.namespace,
      spec: { ...spec, orchestrator: services.get(orchestrator) as AiService, steps: typedSteps },
    });
  }
  return chart;
}

function readExample(folder: string): (AiServiceInput | SagaInput)[] {
  return validateFiles([folder]).map(
    (report) =>
      parseAllDocuments(readFileSync(report.file, 'utf8'))[report.document]?.toJS() as
        AiServiceInput | SagaInput,
  );
}

/** True only when each type is assignable to the other. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

describe('AiService and Saga constructs', () => {
  it('take props typed exactly as the API schemas accept them (cdk8s/spec-types.ts)', () => {
    // A compile-time check: typecheck fails when the generated types drift from z.input.
    const same: [Same<AiServiceSpecProps, AiServiceInput['spec']>, Same<SagaSpecInput, SagaInput['spec']>] = [
      true,
      true,
    ];
    expect(same).toEqual([true, true]);
    expect(readFileSync(join(REPO_DIR, 'cdk8s', 'spec-types.ts'), 'utf8')).toContain(
      '/** Container image of the app (required unless workload adopts existing pods). */\n  image?: string;',
    );
  });

  it('emit the custom resources as written, saga references as names', () => {
    const objects = Testing.synth(minimal(Testing.app()));
    expect(objects.map((o) => `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`)).toEqual([
      'AiService/shop/orders',
      'AiService/shop/payments',
      'Saga/shop/checkout',
    ]);
    expect(objects[0]).toEqual({
      ...api,
      metadata: { name: 'orders', namespace: 'shop' },
      spec: { image: 'example/orders:1', port: 8080 },
    });
    expect(objects[2].spec.orchestrator).toBe('orders');
    expect(objects[2].spec.steps.map((s: { action: { service: string } }) => s.action.service)).toEqual([
      'payments',
      'mailer',
    ]);
  });

  it('fail synth with the field and the message the API gives', () => {
    const app = Testing.app();
    const chart = new AimeshChart(app, 'bad');
    new AiService(chart, 'core', {
      spec: { image: 'example/core:1', replicas: 2, autoscaling: { maxReplicas: 5 } },
    });
    new AiService(chart, 'Not_A_Label', { spec: { image: 'example/x:1' } });
    expect(() => app.synth()).toThrow(
      /\[bad\/core\] spec\.replicas: set either replicas or autoscaling, not both/,
    );
    expect(() => app.synth()).toThrow(
      /\[bad\/Not_A_Label\] metadata\.name: "Not_A_Label" must be at most 63 lowercase letters, digits and "-", starting with a letter/,
    );
  });

  it('refuse a saga whose services are in another namespace', () => {
    const app = Testing.app();
    const a = new AimeshChart(app, 'a', { namespace: 'a' });
    const b = new AimeshChart(app, 'b', { namespace: 'b' });
    const orders = new AiService(a, 'orders', { spec: { image: 'example/orders:1' } });
    new Saga(b, 'checkout', {
      spec: { orchestrator: orders, steps: [{ name: 'one', action: { service: orders, path: '/x' } }] },
    });
    expect(() => app.synth()).toThrow(
      /\[b\/checkout\] spec\.orchestrator: AiService "orders" is in namespace "a", the saga in "b"/,
    );
  });

  it('in rendered mode emit what the operator would apply, sagas included', () => {
    const chart = minimal(Testing.app(), 'rendered');
    const objects = Testing.synth(chart);
    const orders = chart.node.findChild('orders') as AiService;
    const payments = chart.node.findChild('payments') as AiService;
    const saga = chart.node.findChild('checkout') as Saga;
    const expected = renderFiles([orders.resource, payments.resource, saga.resource]).flatMap(
      (f) => f.objects,
    );
    expect(objects).toEqual(expected);
    expect(objects.map((o) => o.kind)).not.toContain('AiService');
    const config = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'orders-sidecar');
    expect(JSON.stringify(config)).toContain('checkout');
  });

  it('in rendered mode equal aimesh render of the same example system', () => {
    const objects = Testing.synth(suokeAsConstructs('rendered'));
    const resources = validateFiles([SUOKE]).map((r) => r.resource as NonNullable<typeof r.resource>);
    expect(objects).toEqual(renderFiles(resources).flatMap((f) => f.objects));
    expect(objects.length).toBeGreaterThan(50);
  });
});
