import { join } from 'node:path';
import { requireBinary } from './binaries.js';
import { COMPONENTS, REPO_DIR, pinnedVersion } from './components.js';
import { runCommand, type CommandResult } from './processes.js';

/** Runs the helm binary built by test/env (no cluster access unless a kubeconfig is given). */
export function runHelm(args: string[], kubeconfig?: string): Promise<CommandResult> {
  return runCommand(requireBinary('helm'), args, kubeconfig ? { KUBECONFIG: kubeconfig } : {});
}

/**
 * `--kube-version` for helm template and lint: the version of the test control plane.
 * helm built with plain `go build` (without its Makefile's ldflags) assumes Kubernetes
 * v1.20, which the chart's kubeVersion constraint rejects.
 */
export function kubeVersionFlag(): string {
  const kubernetes = COMPONENTS.find((c) => c.name === 'kubernetes');
  if (!kubernetes) throw new Error('test/env has no kubernetes component');
  return `--kube-version=${pinnedVersion(kubernetes)}`;
}

/**
 * `helm install` of the operator chart on the one-node cluster, from the image imported
 * into the node (never pulled), waiting until its pods are Ready.
 */
export function installOperatorChart(kubeconfig: string): Promise<CommandResult> {
  return runHelm(
    [
      'install',
      'aimesh',
      join(REPO_DIR, 'charts', 'aimesh-operator'),
      '--namespace',
      'aimesh-system',
      '--create-namespace',
      '--set',
      'image.pullPolicy=Never',
      '--wait',
      '--timeout',
      '3m',
    ],
    kubeconfig,
  );
}
