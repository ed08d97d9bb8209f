import { requireBinary } from './binaries.js';
import { COMPONENTS, pinnedVersion } from './components.js';
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
