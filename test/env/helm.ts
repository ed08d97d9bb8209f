import { spawn } from 'node:child_process';
import { requireBinary } from './binaries.js';
import { COMPONENTS, pinnedVersion } from './components.js';
import type { CommandResult } from './control-plane.js';

/** Runs the helm binary built by test/env (no cluster access unless a kubeconfig is given). */
export function runHelm(args: string[], kubeconfig?: string): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(requireBinary('helm'), args, {
      env: { ...process.env, ...(kubeconfig ? { KUBECONFIG: kubeconfig } : {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
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
