/**
 * The parts of the test control plane, built from their Go modules. Each component's
 * pinned version is the one its go.mod under modules/ requires, so go.mod is the one
 * place to change a version.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ENV_DIR = dirname(fileURLToPath(import.meta.url));
export const REPO_DIR = join(ENV_DIR, '..', '..');

export interface Component {
  name: string;
  /** Go module whose version go.mod pins. */
  module: string;
  /** Folder under modules/ with its go.mod, when it is shared with another component. */
  moduleFolder?: string;
  /** Needed only by the one-node cluster (test/env/node.ts), not by the control plane. */
  node?: boolean;
  /** Main packages to build, one binary each (named after the last path element, or as given). */
  binaries: { name: string; package: string }[];
  /** Extra -X flags so the binary reports its real version. */
  versionFlags: (version: string) => string[];
  /**
   * A binary from elsewhere (PATH, KUBEBUILDER_ASSETS) fits when its version output matches;
   * without it only our own build is used (PATH has unrelated programs named like CNI plugins).
   */
  fits?: (versionOutput: string) => boolean;
}

export const COMPONENTS: Component[] = [
  {
    name: 'etcd',
    module: 'go.etcd.io/etcd/server/v3',
    binaries: [{ name: 'etcd', package: 'go.etcd.io/etcd/server/v3' }],
    versionFlags: () => [],
    fits: (out) => /etcd Version: 3\.[5-9]\./.test(out),
  },
  {
    name: 'kubernetes',
    module: 'k8s.io/kubernetes',
    binaries: [
      { name: 'kube-apiserver', package: 'k8s.io/kubernetes/cmd/kube-apiserver' },
      { name: 'kube-controller-manager', package: 'k8s.io/kubernetes/cmd/kube-controller-manager' },
      { name: 'kubectl', package: 'k8s.io/kubernetes/cmd/kubectl' },
    ],
    versionFlags: kubernetesVersionFlags,
    fits: (out) => /v1\.(3[1-9]|[4-9][0-9])\./.test(out),
  },
  {
    name: 'consul',
    module: 'github.com/hashicorp/consul',
    binaries: [{ name: 'consul', package: 'github.com/hashicorp/consul' }],
    versionFlags: () => [],
    fits: (out) => /Consul v1\./.test(out),
  },
  {
    name: 'helm',
    module: 'helm.sh/helm/v3',
    binaries: [{ name: 'helm', package: 'helm.sh/helm/v3/cmd/helm' }],
    versionFlags: (version) => [`-X helm.sh/helm/v3/internal/version.version=${version}`],
    fits: (out) => /v3\.\d+\./.test(out),
  },
  {
    // `istioctl analyze` checks that Istio accepts the policies aimesh renders as a whole.
    name: 'istioctl',
    module: 'istio.io/istio',
    binaries: [{ name: 'istioctl', package: 'istio.io/istio/istioctl/cmd/istioctl' }],
    versionFlags: () => [],
  },
  {
    name: 'crane',
    module: 'github.com/google/go-containerregistry',
    binaries: [{ name: 'crane', package: 'github.com/google/go-containerregistry/cmd/crane' }],
    versionFlags: (version) => [`-X github.com/google/go-containerregistry/cmd/crane/cmd.Version=${version}`],
  },
  {
    name: 'kubernetes-node',
    module: 'k8s.io/kubernetes',
    // Same go.mod as the control plane, so one replace block pins every staging module.
    moduleFolder: 'kubernetes',
    node: true,
    binaries: [
      { name: 'kubelet', package: 'k8s.io/kubernetes/cmd/kubelet' },
      { name: 'kube-scheduler', package: 'k8s.io/kubernetes/cmd/kube-scheduler' },
      { name: 'kube-proxy', package: 'k8s.io/kubernetes/cmd/kube-proxy' },
    ],
    versionFlags: kubernetesVersionFlags,
  },
  {
    name: 'containerd',
    module: 'github.com/containerd/containerd/v2',
    node: true,
    binaries: [
      { name: 'containerd', package: 'github.com/containerd/containerd/v2/cmd/containerd' },
      {
        name: 'containerd-shim-runc-v2',
        package: 'github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2',
      },
      { name: 'ctr', package: 'github.com/containerd/containerd/v2/cmd/ctr' },
    ],
    versionFlags: (version) => [`-X github.com/containerd/containerd/v2/version.Version=${version}`],
  },
  {
    name: 'cni',
    module: 'github.com/containernetworking/plugins',
    node: true,
    binaries: ['main/bridge', 'ipam/host-local', 'main/loopback', 'meta/portmap'].map((plugin) => ({
      name: plugin.split('/')[1] as string,
      package: `github.com/containernetworking/plugins/plugins/${plugin}`,
    })),
    versionFlags: (version) => [
      `-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=${version}`,
    ],
  },
  {
    name: 'coredns',
    module: 'github.com/coredns/coredns',
    node: true,
    binaries: [{ name: 'coredns', package: 'github.com/coredns/coredns' }],
    versionFlags: () => [],
  },
  {
    // The pod sandbox's pause process: our own few lines of Go (modules/pause/main.go).
    name: 'pause',
    module: 'aimesh.test/env/pause',
    node: true,
    binaries: [{ name: 'pause', package: 'aimesh.test/env/pause' }],
    versionFlags: () => [],
  },
];

function kubernetesVersionFlags(version: string): string[] {
  const [major, minor] = version.replace(/^v/, '').split('.');
  return ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version'].flatMap((pkg) => [
    `-X ${pkg}.gitVersion=${version}`,
    `-X ${pkg}.gitMajor=${major}`,
    `-X ${pkg}.gitMinor=${minor}`,
    `-X ${pkg}.gitTreeState=clean`,
  ]);
}

/**
 * Parts taken from Debian's archive instead of built: `apt-get download` of the pinned
 * package version, unpacked with `dpkg -x` into the cache (nothing is installed on the
 * machine). The binaries need only libc.
 */
export interface DebianComponent {
  name: string;
  /** Debian package and its exact version (`apt-cache policy <package>` lists them). */
  debianPackage: string;
  version: string;
  /** Files in the package to keep, by their path inside it; each lands in the cache folder by its base name. */
  binaries: { name: string; path: string }[];
}

export const DEBIAN_COMPONENTS: DebianComponent[] = [
  {
    // A real Prometheus checks the chart's alert rules and dashboard queries (test/e2e/prometheus.test.ts).
    name: 'prometheus',
    debianPackage: 'prometheus',
    version: '2.42.0+ds-5+deb12u1',
    binaries: [
      { name: 'prometheus', path: 'usr/bin/prometheus' },
      { name: 'promtool', path: 'usr/bin/promtool' },
    ],
  },
];

/** Istio's CRDs with full schemas come from this Go module (a source file, no build). */
export const ISTIO_API = {
  module: 'istio.io/api',
  version: 'v1.31.4',
  file: 'kubernetes/customresourcedefinitions.gen.yaml',
};

export function moduleDir(component: Component): string {
  return join(ENV_DIR, 'modules', component.moduleFolder ?? component.name);
}

export function pinnedVersion(component: Component): string {
  if (component.module.startsWith('aimesh.test/')) return localSourceVersion(component);
  const goMod = readFileSync(join(moduleDir(component), 'go.mod'), 'utf8');
  const match = new RegExp(
    `^\\s*(?:require\\s+)?${component.module.replace(/[.]/g, '\\.')} (v\\S+)`,
    'm',
  ).exec(goMod);
  if (!match?.[1])
    throw new Error(`test/env/modules/${component.name}/go.mod does not require ${component.module}`);
  return match[1];
}

/** Our own Go source has no release: its version is a digest of its files. */
function localSourceVersion(component: Component): string {
  const dir = moduleDir(component);
  const hash = createHash('sha256');
  for (const file of readdirSync(dir).sort()) hash.update(file).update(readFileSync(join(dir, file)));
  return `src-${hash.digest('hex').slice(0, 12)}`;
}

/** Where built binaries are cached, outside the repository so fresh clones reuse them. */
export function cacheDir(): string {
  return process.env.AIMESH_TESTENV_CACHE ?? join(homedir(), '.cache', 'aimesh', 'testenv');
}

export function componentCacheDir(component: Component | DebianComponent): string {
  const version = 'debianPackage' in component ? component.version : pinnedVersion(component);
  return join(cacheDir(), `${component.name}-${version}`);
}

export function istioCrdsPath(): string {
  return join(cacheDir(), `istio-api-${ISTIO_API.version}`, 'crds.yaml');
}
