/**
 * A one-node Kubernetes cluster on this machine: the test control plane bound to a private
 * node address, a Consul agent for the node, and a real node (containerd with runc, the CNI
 * bridge, kubelet, kube-scheduler, kube-proxy and CoreDNS), all built by `npm run testenv`.
 *
 * Pods live on a bridge with no route off the machine: they get routes to the node address
 * and the Service range only, nothing is masqueraded, and a guard chain first in FORWARD
 * drops whatever is forwarded to or from the pod bridge except pod-to-pod traffic. CoreDNS
 * has no `forward` plugin, so no query leaves the machine either.
 *
 * Everything the node writes lives in one folder, except what the kubelet writes whatever its
 * flags say (FINDINGS.md); stop() undoes every change in the order that leaves nothing behind,
 * and a node left behind by a killed run is cleaned up before the next one starts.
 */
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { requireBinary } from './binaries.js';
import { COMPONENTS, componentCacheDir } from './components.js';
import { startConsul, type ConsulAgent } from './consul.js';
import { startControlPlane, type ControlPlane } from './control-plane.js';
import { pauseImage } from './images.js';
import { freePorts } from './ports.js';
import { startProcess, waitFor, type ManagedProcess } from './processes.js';

export const NODE = {
  name: 'aimesh-node',
  /** The node address: on a bridge with no ports (the kernel has no dummy device). */
  ip: '10.250.0.1',
  bridge: 'aimesh-node0',
  podBridge: 'aimesh-cni0',
  podSubnet: '10.244.0.0/24',
  podGateway: '10.244.0.1',
  /** The control plane's --service-cluster-ip-range. */
  serviceRange: '10.96.0.0/16',
  guardChain: 'AIMESH-NODE-GUARD',
} as const;

/** Kernel settings the kubelet, kube-proxy or the CNI bridge change; restored on stop. */
const SYSCTLS = [
  'net/ipv4/ip_forward',
  'net/ipv4/conf/all/route_localnet',
  'net/bridge/bridge-nf-call-iptables',
  'net/bridge/bridge-nf-call-ip6tables',
  'vm/overcommit_memory',
  'vm/panic_on_oom',
  'kernel/panic',
  'kernel/panic_on_oops',
  'kernel/keys/root_maxkeys',
  'kernel/keys/root_maxbytes',
  'net/netfilter/nf_conntrack_max',
];

/** Host paths the node's parts create whatever their flags say; removed if they were absent. */
const HOST_PATHS = [
  '/var/lib/kubelet',
  '/var/log/containers',
  '/var/log/pods',
  '/var/lib/cni',
  '/etc/cni',
  '/opt/cni',
  '/run/containerd',
  '/var/run/nri',
  '/run/nri',
  '/etc/kubernetes',
  '/usr/libexec/kubernetes',
  '/var/lib/kube-proxy',
  '/run/xtables.lock',
];

const HOST_PACKAGES: { binary: string; debianPackage: string }[] = [
  { binary: 'runc', debianPackage: 'runc' },
  { binary: 'iptables', debianPackage: 'iptables' },
  { binary: 'conntrack', debianPackage: 'conntrack' },
];

/** What a stopped or killed node must undo, saved where the next run finds it. */
interface NodeState {
  pid: number;
  dir: string;
  sysctls: Record<string, string>;
  absentPaths: string[];
  iptablesChains: Record<string, string[]>;
  /** nftables tables (iptables-nft makes `ip nat` and `ip mangle` on first use). */
  nftTables: string[];
}

const STATE_FILE = '/run/aimesh-node.json';

export interface Cluster {
  controlPlane: ControlPlane;
  consul: ConsulAgent;
  kubeconfig: string;
  dir: string;
  kubectl: ControlPlane['kubectl'];
  /** Imports an image tarball into the node and tags it with `tags` too. */
  importImage: (tarball: string, name: string, tags?: string[]) => Promise<void>;
  /** Host PID of a container's main process, from its `containerd://<id>` status id. */
  containerPid: (containerId: string) => Promise<number>;
  /** Milliseconds: control plane up, then node Ready with DNS and kube-proxy. */
  timings: { controlPlane: number; node: number };
  stop: () => Promise<void>;
}

/**
 * Why a node cannot run here, or undefined when it can. The e2e tests skip with this message
 * instead of failing obscurely.
 */
export function nodeUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return `the test node needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0)
    return 'the test node needs root (it creates bridges, mounts, iptables chains and cgroups): run as root';
  if (!existsSync('/sys/fs/cgroup/memory') && !existsSync('/sys/fs/cgroup/cgroup.controllers'))
    return 'the test node needs cgroups (neither a v1 memory hierarchy nor cgroup v2 is mounted at /sys/fs/cgroup)';
  if (!existsSync('/proc/sys/net/bridge'))
    return 'the test node needs bridge netfilter (br_netfilter: /proc/sys/net/bridge is missing)';
  if (!readFileSync('/proc/filesystems', 'utf8').includes('overlay'))
    return 'the test node needs overlayfs (containerd snapshots); "overlay" is not in /proc/filesystems';
  const missing = HOST_PACKAGES.filter((p) => !onPath(p.binary));
  if (missing.length > 0 && !onPath('apt-get'))
    return `the test node needs ${missing.map((p) => p.binary).join(', ')} and there is no apt-get to install them`;
  const unbuilt = COMPONENTS.filter((c) => c.node)
    .flatMap((c) => c.binaries.map((b) => join(componentCacheDir(c), b.name)))
    .filter((path) => !existsSync(path));
  if (unbuilt.length > 0)
    return `the test node is not built (run "npm run testenv"): missing ${unbuilt.join(', ')}`;
  return undefined;
}

/** Installs the Debian packages the node needs (runc, iptables, conntrack) when missing. */
export function installHostPackages(log: (message: string) => void): void {
  installDebianPackages(HOST_PACKAGES, log);
}

/**
 * Installs, with apt-get, the Debian packages whose binary is not on PATH (Debian's
 * archive is reachable here; nothing is downloaded from anywhere else).
 */
export function installDebianPackages(
  packages: { binary: string; debianPackage: string }[],
  log: (message: string) => void,
): void {
  const missing = packages.filter((p) => !onPath(p.binary)).map((p) => p.debianPackage);
  if (missing.length === 0) return;
  log(`installing ${missing.join(', ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  run('apt-get', ['update', '-qq'], { env });
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { env });
}

export async function startCluster(log: (message: string) => void = () => {}): Promise<Cluster> {
  const reason = nodeUnavailableReason();
  if (reason) throw new Error(reason);
  installHostPackages(log);
  cleanupLeftoverNode(log);

  const dir = mkdtempSync(join(tmpdir(), 'aimesh-node-'));
  const logs = join(dir, 'logs');
  const state: NodeState = {
    pid: process.pid,
    dir,
    sysctls: Object.fromEntries(SYSCTLS.filter(sysctlExists).map((key) => [key, readSysctl(key)])),
    absentPaths: HOST_PATHS.filter((path) => !existsSync(path)),
    iptablesChains: { iptables: listChains('iptables'), ip6tables: listChains('ip6tables') },
    nftTables: listNftTables(),
  };
  writeFileSync(STATE_FILE, JSON.stringify(state));

  const undo: { what: string; run: () => Promise<void> | void }[] = [
    { what: 'host state', run: () => restoreHost(state) },
  ];
  const stop = async () => {
    const errors: string[] = [];
    for (const step of undo.reverse()) {
      try {
        await step.run();
      } catch (error) {
        errors.push(`${step.what}: ${String(error)}`);
      }
    }
    undo.length = 0;
    if (errors.length > 0) throw new Error(`node teardown left errors:\n${errors.join('\n')}`);
  };

  try {
    const began = Date.now();
    createNodeNetwork();
    const controlPlane = await startControlPlane({ address: NODE.ip, nodeLifecycle: true });
    undo.push({ what: 'control plane', run: () => controlPlane.stop() });
    const consul = await startConsul({ clientAddress: NODE.ip, httpPort: 8500 });
    undo.push({ what: 'consul', run: () => consul.stop() });
    const controlPlaneMs = Date.now() - began;

    const nodeBegan = Date.now();
    const pause = await pauseImage();
    const socket = join(dir, 'containerd.sock');
    writeContainerdConfig(dir, pause.name);
    const containerd = startProcess(
      'containerd',
      requireBinary('containerd'),
      ['--config', join(dir, 'containerd.toml')],
      logs,
      // The shim is found on containerd's PATH.
      { PATH: `${dirname(requireBinary('containerd-shim-runc-v2'))}:${process.env.PATH ?? ''}` },
    );
    undo.push({ what: 'containerd', run: () => stopContainerd(dir, socket, containerd) });
    await waitFor('containerd socket', async () => ctr(socket, ['version']).code === 0, 30_000);
    const importImage = async (tarball: string, name: string, tags: string[] = []) => {
      const imported = ctr(socket, ['images', 'import', tarball]);
      if (imported.code !== 0) throw new Error(`ctr images import ${tarball}: ${imported.stderr}`);
      for (const tag of tags) {
        const tagged = ctr(socket, ['images', 'tag', '--force', name, tag]);
        if (tagged.code !== 0) throw new Error(`ctr images tag ${name} ${tag}: ${tagged.stderr}`);
      }
    };
    await importImage(pause.tarball, pause.name);

    const [kubeletHealthz, schedulerPort, proxyHealthz, proxyMetrics, dnsHealth] = (await freePorts(5)) as [
      number,
      number,
      number,
      number,
      number,
    ];
    const kubeconfig = controlPlane.kubeconfig;
    writeKubeletConfig(dir, socket, kubeletHealthz);
    const kubelet = startProcess(
      'kubelet',
      requireBinary('kubelet'),
      [
        `--config=${join(dir, 'kubelet.yaml')}`,
        `--kubeconfig=${kubeconfig}`,
        `--root-dir=${join(dir, 'kubelet')}`,
        `--cert-dir=${join(dir, 'kubelet', 'pki')}`,
        `--hostname-override=${NODE.name}`,
        `--node-ip=${NODE.ip}`,
        `--volume-plugin-dir=${join(dir, 'volume-plugins')}`,
        '--v=1',
      ],
      logs,
    );
    undo.push({ what: 'kubelet', run: () => kubelet.stop(30_000) });

    const scheduler = startProcess(
      'kube-scheduler',
      requireBinary('kube-scheduler'),
      [
        `--kubeconfig=${kubeconfig}`,
        `--authentication-kubeconfig=${kubeconfig}`,
        `--authorization-kubeconfig=${kubeconfig}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${schedulerPort}`,
        '--leader-elect=false',
        '--v=0',
      ],
      logs,
    );
    undo.push({ what: 'kube-scheduler', run: () => scheduler.stop() });

    writeKubeProxyConfig(dir, kubeconfig, proxyHealthz, proxyMetrics);
    const kubeProxy = startProcess(
      'kube-proxy',
      requireBinary('kube-proxy'),
      [`--config=${join(dir, 'kube-proxy.yaml')}`, '--v=0'],
      logs,
    );
    undo.push({
      what: 'kube-proxy',
      run: async () => {
        await kubeProxy.stop();
        run(requireBinary('kube-proxy'), ['--cleanup', `--config=${join(dir, 'kube-proxy.yaml')}`], {
          allowFailure: true,
        });
      },
    });

    writeCorefile(dir, kubeconfig, dnsHealth);
    const coredns = startProcess('coredns', requireBinary('coredns'), ['-conf', join(dir, 'Corefile')], logs);
    undo.push({ what: 'coredns', run: () => coredns.stop() });

    await waitFor(
      `node ${NODE.name} Ready (logs in ${logs})`,
      async () => {
        const result = await controlPlane.kubectl([
          'get',
          'node',
          NODE.name,
          '-o',
          'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.spec.taints}',
        ]);
        return result.code === 0 && result.stdout.startsWith('True') && !result.stdout.includes('not-ready');
      },
      120_000,
    );
    await waitFor('CoreDNS', async () => (await fetch(`http://127.0.0.1:${dnsHealth}/health`)).ok, 30_000);
    await waitFor(
      'the default ServiceAccount',
      async () => (await controlPlane.kubectl(['get', 'serviceaccount', 'default'])).code === 0,
      60_000,
    );
    log(`node ${NODE.name} Ready at ${NODE.ip}`);

    return {
      controlPlane,
      consul,
      kubeconfig,
      dir,
      kubectl: controlPlane.kubectl,
      importImage,
      containerPid: async (containerId) => {
        const id = containerId.replace(/^containerd:\/\//, '');
        const tasks = ctr(socket, ['tasks', 'ls']);
        const line = tasks.stdout.split('\n').find((l) => l.startsWith(id));
        const pid = Number(line?.split(/\s+/)[1]);
        if (!pid) throw new Error(`no running task for container ${id}`);
        return pid;
      },
      timings: { controlPlane: controlPlaneMs, node: Date.now() - nodeBegan },
      stop,
    };
  } catch (error) {
    await stop().catch((teardown: unknown) => log(String(teardown)));
    throw new Error(`the test node did not start (logs in ${logs}): ${String(error)}`, { cause: error });
  }
}

function createNodeNetwork(): void {
  run('ip', ['link', 'add', NODE.bridge, 'type', 'bridge']);
  run('ip', ['addr', 'add', `${NODE.ip}/32`, 'dev', NODE.bridge]);
  run('ip', ['link', 'set', NODE.bridge, 'up']);
  // Host processes (the API server calling a webhook Service, kubectl port-forward) reach
  // Service IPs from the node address, the one address pods route back to: without this
  // route the source is the machine's default address, the pod's answer has no way back,
  // and the API server's webhook calls time out. It also keeps Service traffic that no
  // kube-proxy rule catches on this bridge, off the machine. Deleted with the bridge.
  run('ip', ['route', 'add', NODE.serviceRange, 'dev', NODE.bridge, 'src', NODE.ip]);
  // The CNI bridge plugin turns ip_forward on (pod -> Service -> pod needs it): only pod to
  // pod is forwarded; anything else to or from pods is dropped, and when forwarding was
  // off before, everything else forwarded is dropped too, as it was.
  const forwardingWasOn = readSysctl('net/ipv4/ip_forward') === '1';
  for (const iptables of ['iptables', 'ip6tables']) {
    run(iptables, ['-w', '-N', NODE.guardChain]);
    run(iptables, ['-w', '-A', NODE.guardChain, '-i', NODE.podBridge, '-o', NODE.podBridge, '-j', 'ACCEPT']);
    run(iptables, ['-w', '-A', NODE.guardChain, '-i', NODE.podBridge, '-j', 'DROP']);
    run(iptables, ['-w', '-A', NODE.guardChain, '-o', NODE.podBridge, '-j', 'DROP']);
    if (!forwardingWasOn) run(iptables, ['-w', '-A', NODE.guardChain, '-j', 'DROP']);
    run(iptables, ['-w', '-I', 'FORWARD', '1', '-j', NODE.guardChain]);
  }
  writeSysctl('net/bridge/bridge-nf-call-iptables', '1');
}

function writeContainerdConfig(dir: string, sandboxImage: string): void {
  const cni = componentCacheDir(COMPONENTS.find((c) => c.name === 'cni') as (typeof COMPONENTS)[number]);
  const netConf = join(dir, 'cni', 'net.d');
  mkdirSync(netConf, { recursive: true });
  writeFileSync(
    join(netConf, '10-aimesh.conflist'),
    JSON.stringify(
      {
        cniVersion: '1.0.0',
        name: 'aimesh',
        plugins: [
          {
            type: 'bridge',
            bridge: NODE.podBridge,
            isGateway: true,
            ipMasq: false,
            hairpinMode: true,
            ipam: {
              type: 'host-local',
              dataDir: join(dir, 'cni', 'ipam'),
              ranges: [[{ subnet: NODE.podSubnet, gateway: NODE.podGateway }]],
              // No default route: pods reach the node and Services, nothing off the machine.
              routes: [{ dst: NODE.serviceRange }, { dst: `${NODE.ip}/32` }],
            },
          },
          { type: 'portmap', capabilities: { portMappings: true } },
        ],
      },
      null,
      2,
    ),
  );
  writeFileSync(
    join(dir, 'containerd.toml'),
    `version = 3
root = "${dir}/containerd/root"
state = "${dir}/containerd/state"
imports = []

[grpc]
  address = "${dir}/containerd.sock"

[ttrpc]
  address = "${dir}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/containerd/opt"

[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "${dir}/s"

[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "${sandboxImage}"

[plugins."io.containerd.cri.v1.runtime"]
  # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj is EPERM and every sandbox fails.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "${whichSync('runc')}"
        Root = "${dir}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["${cni}"]
    conf_dir = "${netConf}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
`,
  );
}

function writeKubeletConfig(dir: string, socket: string, healthzPort: number): void {
  writeFileSync(join(dir, 'resolv.conf'), `nameserver ${NODE.ip}\n`);
  writeFileSync(
    join(dir, 'kubelet.yaml'),
    `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://${socket}
address: ${NODE.ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${healthzPort}
# The API server calls the kubelet (logs, exec) without a client certificate here; only
# this machine and its pods can reach ${NODE.ip}.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
# This machine has cgroup v1 (hybrid) and no swap accounting.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
# Images are imported, never pulled: do not collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
clusterDNS: [${NODE.ip}]
clusterDomain: cluster.local
resolvConf: ${join(dir, 'resolv.conf')}
podLogsDir: ${join(dir, 'pod-logs')}
staticPodPath: ""
registerNode: true
serializeImagePulls: false
shutdownGracePeriod: 0s
`,
  );
}

function writeKubeProxyConfig(
  dir: string,
  kubeconfig: string,
  healthzPort: number,
  metricsPort: number,
): void {
  writeFileSync(
    join(dir, 'kube-proxy.yaml'),
    `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${kubeconfig}
hostnameOverride: ${NODE.name}
mode: iptables
healthzBindAddress: 127.0.0.1:${healthzPort}
metricsBindAddress: 127.0.0.1:${metricsPort}
nodePortAddresses: [${NODE.ip}/32]
# Zero leaves the machine's conntrack settings as they are.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`,
  );
}

function writeCorefile(dir: string, kubeconfig: string, healthPort: number): void {
  writeFileSync(
    join(dir, 'Corefile'),
    `cluster.local:53 in-addr.arpa:53 {
  bind ${NODE.ip}
  errors
  health 127.0.0.1:${healthPort}
  kubernetes cluster.local in-addr.arpa {
    kubeconfig ${kubeconfig} aimesh-test
    pods insecure
    fallthrough in-addr.arpa
  }
  cache 30
}
# Everything else is refused: no forward plugin, no query leaves the machine.
.:53 {
  bind ${NODE.ip}
  errors
}
`,
  );
}

/**
 * Stops every container while containerd still runs (so their mounts, cgroups and shims go
 * through containerd), then containerd, then whatever shim outlived it.
 */
async function stopContainerd(dir: string, socket: string, containerd: ManagedProcess): Promise<void> {
  if (containerd.child.exitCode === null) {
    const ids = ctr(socket, ['tasks', 'ls', '-q'])
      .stdout.split('\n')
      .filter((id) => id.length > 0);
    for (const id of ids) ctr(socket, ['tasks', 'kill', '--all', '--signal', 'SIGKILL', id]);
    await waitFor(
      'containers to stop',
      async () => ctr(socket, ['tasks', 'ls', '-q']).stdout.trim() === '',
      30_000,
    ).catch(() => undefined);
    for (const id of ids) ctr(socket, ['tasks', 'delete', '--force', id]);
    await containerd.stop(15_000);
  }
  killShims(dir);
}

/** Undoes what the node changed on the machine (also for a node a killed run left behind). */
function restoreHost(state: NodeState): void {
  killShims(state.dir);
  unmountUnder(state.dir);
  for (const link of podLinks()) run('ip', ['link', 'delete', link], { allowFailure: true });
  for (const bridge of [NODE.podBridge, NODE.bridge])
    if (existsSync(`/sys/class/net/${bridge}`)) run('ip', ['link', 'delete', bridge], { allowFailure: true });
  for (const iptables of ['iptables', 'ip6tables'] as const)
    removeChains(iptables, state.iptablesChains[iptables] ?? []);
  for (const table of listNftTables())
    if (!(state.nftTables ?? []).includes(table) && NFT_TABLES_WE_MAKE.test(table))
      run('nft', ['delete', ...table.split(' ')], { allowFailure: true });
  removeKubePodCgroups();
  for (const [key, value] of Object.entries(state.sysctls))
    if (readSysctl(key) !== value) writeSysctl(key, value);
  for (const path of state.absentPaths) {
    unmountUnder(path);
    rmSync(path, { recursive: true, force: true });
  }
  rmSync(state.dir, { recursive: true, force: true });
  rmSync(STATE_FILE, { force: true });
}

function cleanupLeftoverNode(log: (message: string) => void): void {
  if (!existsSync(STATE_FILE)) return;
  const state = JSON.parse(readFileSync(STATE_FILE, 'utf8')) as NodeState;
  if (isAlive(state.pid))
    throw new Error(`another test node runs on this machine (pid ${state.pid}); one node per machine`);
  log(`cleaning up the node a stopped run left in ${state.dir}`);
  restoreHost(state);
}

/** Shims are daemons that outlive containerd; ours are the ones whose socket is in `dir`. */
function killShims(dir: string): void {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const exe = readlinkSync(`/proc/${entry}/exe`);
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (exe.endsWith('/containerd-shim-runc-v2') && cmdline.includes(dir))
        process.kill(Number(entry), 'SIGKILL');
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
}

function unmountUnder(path: string): void {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4]?.replace(/\\040/g, ' '))
    .filter(
      (mount): mount is string => mount !== undefined && (mount === path || mount.startsWith(`${path}/`)),
    )
    .sort((a, b) => b.length - a.length);
  for (const mount of mounts) run('umount', ['--lazy', mount], { allowFailure: true });
}

function podLinks(): string[] {
  if (!existsSync(`/sys/class/net/${NODE.podBridge}/brif`)) return [];
  return readdirSync(`/sys/class/net/${NODE.podBridge}/brif`);
}

/** Removes the guard chain and every chain the node's parts added (KUBE-*, CNI-*). */
function removeChains(iptables: 'iptables' | 'ip6tables', before: string[]): void {
  if (!onPath(iptables)) return;
  const existing = new Set(before);
  for (const table of ['filter', 'nat', 'mangle']) {
    const save = spawnSync(`${iptables}-save`, ['-t', table], { encoding: 'utf8' }).stdout ?? '';
    const chains = [...save.matchAll(/^:(\S+)/gm)]
      .map((m) => m[1] as string)
      .filter(
        (chain) =>
          !existing.has(`${table}/${chain}`) &&
          !['INPUT', 'OUTPUT', 'FORWARD', 'PREROUTING', 'POSTROUTING'].includes(chain),
      );
    // Rules in built-in chains that jump to our chains go first, then the chains themselves.
    for (const line of save.split('\n')) {
      const rule = /^-A (\S+) (.*-j (\S+).*)$/.exec(line);
      if (rule && chains.includes(rule[3] as string) && !chains.includes(rule[1] as string))
        run(iptables, ['-w', '-t', table, '-D', rule[1] as string, ...splitRule(rule[2] as string)], {
          allowFailure: true,
        });
    }
    for (const chain of chains) run(iptables, ['-w', '-t', table, '-F', chain], { allowFailure: true });
    for (const chain of chains) run(iptables, ['-w', '-t', table, '-X', chain], { allowFailure: true });
  }
}

/** Tables iptables-nft and kube-proxy create; others on the machine are not ours. */
const NFT_TABLES_WE_MAKE = /^table (ip|ip6|inet) (filter|nat|mangle|kube-proxy)$/;

function listNftTables(): string[] {
  if (!onPath('nft')) return [];
  return (spawnSync('nft', ['list', 'tables'], { encoding: 'utf8' }).stdout ?? '')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.startsWith('table '));
}

function listChains(iptables: string): string[] {
  if (!onPath(iptables)) return [];
  return ['filter', 'nat', 'mangle'].flatMap((table) => {
    const save = spawnSync(`${iptables}-save`, ['-t', table], { encoding: 'utf8' }).stdout ?? '';
    return [...save.matchAll(/^:(\S+)/gm)].map((m) => `${table}/${m[1]}`);
  });
}

/** iptables-save quotes comments with spaces; keep them one argument. */
function splitRule(rule: string): string[] {
  return [...rule.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) =>
    m[1] !== undefined ? m[1] : (m[2] as string),
  );
}

function removeKubePodCgroups(): void {
  const root = '/sys/fs/cgroup';
  if (!existsSync(root)) return;
  const hierarchies = existsSync(join(root, 'cgroup.controllers'))
    ? [root]
    : readdirSync(root).map((name) => join(root, name));
  for (const hierarchy of hierarchies) removeCgroupTree(join(hierarchy, 'kubepods'));
}

function removeCgroupTree(path: string): void {
  if (!existsSync(path)) return;
  for (const entry of readdirSync(path, { withFileTypes: true }))
    if (entry.isDirectory()) removeCgroupTree(join(path, entry.name));
  try {
    rmdirSync(path);
  } catch {
    // a cgroup with a live process stays; the teardown check reports it
  }
}

function ctr(socket: string, args: string[]): { code: number; stdout: string; stderr: string } {
  const result = spawnSync(requireBinary('ctr'), ['--address', socket, '--namespace', 'k8s.io', ...args], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: result.status ?? -1, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

function readSysctl(key: string): string {
  return readFileSync(join('/proc/sys', key), 'utf8').trim();
}

function writeSysctl(key: string, value: string): void {
  writeFileSync(join('/proc/sys', key), value);
}

function sysctlExists(key: string): boolean {
  return existsSync(join('/proc/sys', key));
}

function onPath(binary: string): boolean {
  return whichSync(binary) !== '';
}

function whichSync(binary: string): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin', '/bin']) {
    if (dir && existsSync(join(dir, binary))) return join(dir, binary);
  }
  return '';
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function run(
  command: string,
  args: string[],
  options: { allowFailure?: boolean; env?: NodeJS.ProcessEnv } = {},
): string {
  const result = spawnSync(command, args, {
    encoding: 'utf8',
    env: options.env ?? process.env,
    timeout: 600_000,
  });
  if (!options.allowFailure && (result.error || result.status !== 0))
    throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr || result.error}`);
  return result.stdout ?? '';
}

/**
 * What the node could leave behind on the machine, to compare before and after: network
 * links and addresses, mounts, iptables rules, the kernel settings, host paths, kubepods
 * cgroups.
 */
export function machineState(): Record<string, string[]> {
  const lines = (text: string) => text.split('\n').filter((line) => line.trim().length > 0);
  const iptables = (binary: string) =>
    onPath(binary)
      ? lines(spawnSync(`${binary}-save`, [], { encoding: 'utf8' }).stdout ?? '').filter(
          (l) => !/^[#*]|^COMMIT/.test(l),
        )
      : [];
  return {
    links: lines(run('ip', ['-o', 'link', 'show'])).map((l) => l.split(':')[1]?.trim() ?? l),
    addresses: lines(run('ip', ['-o', 'addr', 'show'])).map((l) => l.split(/\s+/).slice(1, 4).join(' ')),
    // Other programs on a shared machine mount things too: only what a node mounts counts.
    mounts: lines(readFileSync('/proc/self/mountinfo', 'utf8'))
      .map((l) => l.split(' ')[4] ?? l)
      .filter((m) => /aimesh-node|kubelet|containerd|netns|cni|pods/.test(m)),
    iptables: iptables('iptables').map((l) => l.replace(/\[\d+:\d+\]/, '')),
    ip6tables: iptables('ip6tables').map((l) => l.replace(/\[\d+:\d+\]/, '')),
    nftTables: listNftTables(),
    sysctls: SYSCTLS.filter(sysctlExists).map((key) => `${key}=${readSysctl(key)}`),
    hostPaths: HOST_PATHS.filter((path) => existsSync(path)),
    cgroups: existsSync('/sys/fs/cgroup')
      ? readdirSync('/sys/fs/cgroup').filter((h) => existsSync(join('/sys/fs/cgroup', h, 'kubepods')))
      : [],
  };
}
