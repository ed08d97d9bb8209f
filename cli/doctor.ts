/**
 * `aimesh doctor`: what stands between a cluster and working injection, with the fix for
 * each: the webhook configuration and its caBundle, and every pod that should run the
 * aimesh sidecar but does not (the same scan the operator runs). Exit code 1 when
 * anything needs fixing.
 */
import { parseArgs } from 'node:util';
import { scanForMisses } from '../operator/admission/scan.js';
import { KubeClient } from '../operator/kube/client.js';
import { loadKubeCredentials } from '../operator/kube/config.js';
import { MUTATING_WEBHOOK_CONFIGURATION } from '../operator/kube/resources.js';
import { DEFAULT_SIDECAR_IMAGE } from '../render/index.js';

export async function runDoctor(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string' },
      'operator-namespace': { type: 'string', default: 'aimesh-system' },
      'webhook-configuration': { type: 'string', default: 'aimesh-aimesh-operator' },
    },
  });
  const client = new KubeClient(
    await loadKubeCredentials(values.kubeconfig ? { kubeconfig: values.kubeconfig } : {}),
  );
  const problems: string[] = [];

  const name = values['webhook-configuration'];
  const webhook = await client.get<{
    metadata: { name: string };
    webhooks?: { name: string; clientConfig: { caBundle?: string } }[];
  }>(MUTATING_WEBHOOK_CONFIGURATION, '', name);
  if (!webhook)
    problems.push(
      `MutatingWebhookConfiguration ${name} does not exist: no pod is injected.\n  fix: install the chart with webhook.enabled=true (or pass --webhook-configuration with its name)`,
    );
  else if (webhook.webhooks?.some((w) => !w.clientConfig.caBundle))
    problems.push(
      `MutatingWebhookConfiguration ${name} has no caBundle yet: the API server cannot call the webhook.\n  fix: check that the operator runs (it writes the caBundle), or cert-manager's CA injector with certManager.enabled`,
    );

  const misses = await scanForMisses(client, {
    excluded: [values['operator-namespace']],
    sidecarImage: DEFAULT_SIDECAR_IMAGE,
    ...(values.namespace ? { namespace: values.namespace } : {}),
  });
  for (const miss of misses)
    problems.push(
      `pod ${miss.namespace}/${miss.pod}${miss.adoptedBy ? ` (AiService ${miss.adoptedBy})` : ''} runs without the aimesh sidecar: ${miss.reason}\n  fix: ${miss.fix}`,
    );

  for (const problem of problems) process.stdout.write(`${problem}\n`);
  process.stdout.write(
    problems.length === 0
      ? 'ok: the webhook is configured and every pod that should run the aimesh sidecar does\n'
      : `${misses.length} pod(s) without the sidecar, ${problems.length - misses.length} webhook problem(s)\n`,
  );
  return problems.length === 0 ? 0 : 1;
}
