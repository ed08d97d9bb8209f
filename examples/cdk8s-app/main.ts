/**
 * A shop: an orders service that runs a checkout saga against a payments service, with an
 * AI assistant behind provider channels. `npx cdk8s synth` writes the aimesh custom
 * resources for a cluster with the aimesh operator; `AIMESH_MODE=rendered npx cdk8s synth`
 * writes what the operator would apply instead (Deployments, Services, sidecar ConfigMaps,
 * Istio policies), for a cluster without it.
 */
import { App } from 'cdk8s';
import { AiService, AimeshChart, Saga } from 'aimesh/cdk8s';

const app = new App();
const chart = new AimeshChart(app, 'shop', {
  namespace: 'shop',
  mode: process.env.AIMESH_MODE === 'rendered' ? 'rendered' : 'custom-resources',
});

const payments = new AiService(chart, 'payments', {
  spec: {
    image: 'ghcr.io/example/payments:1.4.0',
    port: 8080,
    replicas: 2,
    healthCheck: { path: '/healthz' },
  },
});

const assistant = new AiService(chart, 'assistant', {
  spec: {
    image: 'ghcr.io/example/assistant:2.0.1',
    port: 8080,
    autoscaling: { minReplicas: 1, maxReplicas: 4 },
    providers: [
      {
        name: 'openai',
        baseUrl: 'https://api.openai.com/v1',
        apiKeySecretRef: { name: 'openai', key: 'api-key' },
        priority: 10,
        models: ['gpt-4o-mini'],
      },
    ],
  },
});

const orders = new AiService(chart, 'orders', {
  spec: {
    image: 'ghcr.io/example/orders:3.2.0',
    port: 8080,
    replicas: 2,
    upstreams: [
      {
        name: assistant.name,
        timeout: '20s',
        circuitBreaker: { consecutiveFailures: 5, openFor: '60s' },
      },
    ],
  },
});

new Saga(chart, 'checkout', {
  spec: {
    orchestrator: orders,
    timeout: '2m',
    steps: [
      {
        name: 'reserve',
        action: { service: orders, path: '/reservations', body: { order: '{{ input.orderId }}' } },
        compensation: { service: orders, method: 'DELETE', path: '/reservations/{{ input.orderId }}' },
      },
      {
        name: 'charge',
        action: { service: payments, path: '/charges', body: { order: '{{ input.orderId }}' } },
        pivot: true,
      },
    ],
  },
});

app.synth();
