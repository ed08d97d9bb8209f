/**
 * Finds the binaries of the test control plane: KUBEBUILDER_ASSETS first (the envtest
 * layout), then our cache, then PATH, taking a binary from elsewhere only when its
 * version fits.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import {
  COMPONENTS,
  DEBIAN_COMPONENTS,
  componentCacheDir,
  type Component,
  type DebianComponent,
} from './components.js';

export type BinaryName =
  | 'etcd'
  | 'kube-apiserver'
  | 'kube-controller-manager'
  | 'kubectl'
  | 'consul'
  | 'helm'
  | 'istioctl'
  | 'crane'
  | 'kubelet'
  | 'kube-scheduler'
  | 'kube-proxy'
  | 'containerd'
  | 'containerd-shim-runc-v2'
  | 'ctr'
  | 'bridge'
  | 'host-local'
  | 'loopback'
  | 'portmap'
  | 'coredns'
  | 'pause'
  | 'prometheus'
  | 'promtool';

export interface ResolvedBinary {
  path: string;
  source: 'KUBEBUILDER_ASSETS' | 'cache' | 'PATH';
}

export function resolveBinary(name: BinaryName): ResolvedBinary | undefined {
  const component = componentOf(name);
  const assets = process.env.KUBEBUILDER_ASSETS;
  if (assets && fits(join(assets, name), component))
    return { path: join(assets, name), source: 'KUBEBUILDER_ASSETS' };
  const cached = join(componentCacheDir(component), name);
  if (isExecutable(cached)) return { path: cached, source: 'cache' };
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && fits(join(dir, name), component)) return { path: join(dir, name), source: 'PATH' };
  }
  return undefined;
}

export function requireBinary(name: BinaryName): string {
  const found = resolveBinary(name);
  if (!found)
    throw new Error(
      `${name} is not built: run "npm run testenv" (needs Go, and apt-get for Debian parts), or set KUBEBUILDER_ASSETS`,
    );
  return found.path;
}

export function componentOf(name: BinaryName): Component | DebianComponent {
  const component = [...COMPONENTS, ...DEBIAN_COMPONENTS].find((c) =>
    c.binaries.some((b) => b.name === name),
  );
  if (!component) throw new Error(`unknown test binary ${name}`);
  return component;
}

function fits(path: string, component: Component | DebianComponent): boolean {
  // A Debian part is always our pinned download: PATH may hold another version.
  if ('debianPackage' in component || !component.fits || !isExecutable(path)) return false;
  const flag = path.endsWith('consul') || path.endsWith('helm') ? 'version' : '--version';
  const result = spawnSync(path, [flag], { encoding: 'utf8', timeout: 10_000 });
  return result.status === 0 && component.fits(`${result.stdout}${result.stderr}`);
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
