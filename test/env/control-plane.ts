/**
 * A real Kubernetes control plane on 127.0.0.1 for tests: etcd, kube-apiserver (token
 * authentication, RBAC, admission webhooks on) and kube-controller-manager (garbage
 * collection, deployments, replica sets), with the aimesh and Istio CRDs installed.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireBinary } from './binaries.js';
import { REPO_DIR, istioCrdsPath } from './components.js';
import { freePorts } from './ports.js';
import { runCommand, startProcess, waitFor, type CommandResult, type ManagedProcess } from './processes.js';

export interface ControlPlaneInfo {
  /** https://127.0.0.1:<port> */
  server: string;
  kubeconfig: string;
  token: string;
  caFile: string;
  dir: string;
  pids: Record<string, number>;
}

export interface ControlPlane extends ControlPlaneInfo {
  kubectl: (args: string[], input?: string) => Promise<CommandResult>;
  /**
   * A kubeconfig that acts as a ServiceAccount (token from the TokenRequest API), so a
   * process runs with exactly the RBAC it would have in a cluster.
   */
  serviceAccountKubeconfig: (namespace: string, name: string) => Promise<string>;
  /** Stops kube-apiserver and starts it again on the same port and etcd (a restart). */
  restartApiServer: () => Promise<void>;
  stop: () => Promise<void>;
}

export type { CommandResult } from './processes.js';

export interface ControlPlaneOptions {
  controllerManager?: boolean;
  installCrds?: boolean;
  /**
   * Address kube-apiserver binds and advertises (default 127.0.0.1). Pods reach the API
   * through the `kubernetes` Service, whose endpoint is this address, so a node needs an
   * address pods can route to (test/env/node.ts); the self-signed certificate covers it,
   * the Service IP and kubernetes.default.svc.
   */
  address?: string;
  /** Run the node lifecycle controller, which lifts the not-ready taint of a node once Ready. */
  nodeLifecycle?: boolean;
}

export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const {
    controllerManager = true,
    installCrds = true,
    address = '127.0.0.1',
    nodeLifecycle = false,
  } = options;
  const dir = mkdtempSync(join(tmpdir(), 'aimesh-cp-'));
  const logs = join(dir, 'logs');
  const [etcdClient, etcdPeer, apiPort, kcmPort] = (await freePorts(4)) as [number, number, number, number];
  const token = randomBytes(24).toString('hex');
  const running: ManagedProcess[] = [];
  const stopAll = async () => {
    for (const proc of [...running].reverse()) await proc.stop();
    running.length = 0;
  };

  try {
    running.push(startEtcd(dir, logs, etcdClient, etcdPeer));
    await waitFor('etcd health', async () =>
      (await httpGet(`http://127.0.0.1:${etcdClient}/health`)).includes('true'),
    );

    writeSecurityFiles(dir, token);
    const server = `https://${address}:${apiPort}`;
    const caFile = join(dir, 'pki', 'apiserver.crt');
    const startApi = async () => {
      const api = startApiServer(dir, logs, etcdClient, address, apiPort);
      running.splice(1, 0, api);
      await waitFor(
        'kube-apiserver /readyz',
        async () => (await httpsGet(`${server}/readyz`, token)) === 'ok',
        60_000,
      );
      return api;
    };
    let api = await startApi();
    const kubeconfig = writeKubeconfig(join(dir, 'kubeconfig'), server, caFile, 'admin', token);
    if (controllerManager)
      running.push(startControllerManager(dir, logs, kubeconfig, kcmPort, caFile, nodeLifecycle));

    const kubectl = (args: string[], input?: string) => runKubectl(kubeconfig, args, input);
    if (installCrds) await installCustomResourceDefinitions(kubectl);

    return {
      server,
      kubeconfig,
      token,
      caFile,
      dir,
      pids: Object.fromEntries(running.map((p) => [p.name, p.pid])),
      kubectl,
      serviceAccountKubeconfig: (namespace, name) =>
        serviceAccountKubeconfig({ server, kubeconfig, caFile, dir }, namespace, name),
      restartApiServer: async () => {
        await api.stop();
        running.splice(running.indexOf(api), 1);
        api = await startApi();
      },
      stop: async () => {
        await stopAll();
        if (!process.env.AIMESH_KEEP_TESTENV) rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await stopAll();
    throw new Error(`control plane did not start (logs in ${logs}): ${String(error)}`, { cause: error });
  }
}

/** The ControlPlane API over a control plane another process started (the e2e shared one). */
export function attachControlPlane(
  info: ControlPlaneInfo,
): Pick<ControlPlane, 'kubectl' | 'serviceAccountKubeconfig'> {
  return {
    kubectl: (args, input) => runKubectl(info.kubeconfig, args, input),
    serviceAccountKubeconfig: (namespace, name) => serviceAccountKubeconfig(info, namespace, name),
  };
}

function startEtcd(dir: string, logs: string, client: number, peer: number): ManagedProcess {
  return startProcess(
    'etcd',
    requireBinary('etcd'),
    [
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=http://127.0.0.1:${client}`,
      `--advertise-client-urls=http://127.0.0.1:${client}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=default=http://127.0.0.1:${peer}`,
      '--unsafe-no-fsync',
      '--log-level=warn',
    ],
    logs,
  );
}

function writeSecurityFiles(dir: string, token: string): void {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFileSync(join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
  writeFileSync(join(dir, 'tokens.csv'), `${token},admin,admin,system:masters\n`);
}

function startApiServer(
  dir: string,
  logs: string,
  etcdClient: number,
  address: string,
  port: number,
): ManagedProcess {
  return startProcess(
    'kube-apiserver',
    requireBinary('kube-apiserver'),
    [
      `--etcd-servers=http://127.0.0.1:${etcdClient}`,
      `--bind-address=${address}`,
      `--advertise-address=${address}`,
      `--secure-port=${port}`,
      `--cert-dir=${join(dir, 'pki')}`,
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--authorization-mode=RBAC',
      '--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${join(dir, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      '--service-cluster-ip-range=10.96.0.0/16',
      // Webhook (and aggregated API) calls go to a Service's endpoints, not its ClusterIP: no
      // kube-proxy runs on this host for the e2e control plane, so a ClusterIP would be sent
      // out by the default route, off the machine, where tests must not send traffic. With
      // the node, endpoints are pod IPs on its local bridge.
      '--enable-aggregator-routing=true',
      '--allow-privileged=true',
      // The test node's name resolves nowhere; its InternalIP is where its kubelet listens.
      '--kubelet-preferred-address-types=InternalIP,Hostname',
      '--v=0',
    ],
    logs,
  );
}

function startControllerManager(
  dir: string,
  logs: string,
  kubeconfig: string,
  port: number,
  caFile: string,
  nodeLifecycle: boolean,
): ManagedProcess {
  return startProcess(
    'kube-controller-manager',
    requireBinary('kube-controller-manager'),
    [
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${port}`,
      '--leader-elect=false',
      `--controllers=*,-csrsigning,-nodeipam,${nodeLifecycle ? '' : '-nodelifecycle,'}-persistentvolume-binder,-attachdetach,-ttl,-cloud-node-lifecycle`,
      `--service-account-private-key-file=${join(dir, 'sa.key')}`,
      `--root-ca-file=${caFile}`,
      '--use-service-account-credentials=false',
      '--v=0',
    ],
    logs,
  );
}

/**
 * A kubeconfig that acts as a ServiceAccount of a running control plane (the shared e2e
 * one included), with a token from the TokenRequest API.
 */
export async function serviceAccountKubeconfig(
  plane: Pick<ControlPlaneInfo, 'server' | 'kubeconfig' | 'caFile' | 'dir'>,
  namespace: string,
  name: string,
): Promise<string> {
  const created = await runKubectl(plane.kubeconfig, [
    'create',
    'token',
    name,
    '-n',
    namespace,
    '--duration=24h',
  ]);
  if (created.code !== 0) throw new Error(`token for ${namespace}/${name}: ${created.stderr}`);
  const path = join(plane.dir, `kubeconfig-${namespace}-${name}`);
  return writeKubeconfig(path, plane.server, plane.caFile, `${namespace}:${name}`, created.stdout.trim());
}

function writeKubeconfig(path: string, server: string, caFile: string, user: string, token: string): string {
  const ca = readFileSync(caFile).toString('base64');
  writeFileSync(
    path,
    `apiVersion: v1
kind: Config
clusters:
- name: aimesh-test
  cluster:
    server: ${server}
    certificate-authority-data: ${ca}
users:
- name: ${user}
  user:
    token: ${token}
contexts:
- name: aimesh-test
  context:
    cluster: aimesh-test
    user: ${user}
    namespace: default
current-context: aimesh-test
`,
  );
  return path;
}

async function installCustomResourceDefinitions(kubectl: ControlPlane['kubectl']): Promise<void> {
  const crdDir = join(REPO_DIR, 'crds');
  const files = [...readdirSync(crdDir).map((f) => join(crdDir, f)), istioCrdsPath()];
  const applied = await kubectl(['apply', '--server-side', ...files.flatMap((f) => ['-f', f])]);
  if (applied.code !== 0) throw new Error(`installing CRDs failed: ${applied.stderr}`);
  const established = await kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd', '--all']);
  if (established.code !== 0) throw new Error(`CRDs not established: ${established.stderr}`);
}

export function runKubectl(kubeconfig: string, args: string[], input?: string): Promise<CommandResult> {
  return runCommand(requireBinary('kubectl'), args, { KUBECONFIG: kubeconfig }, input);
}

async function httpGet(url: string): Promise<string> {
  const response = await fetch(url);
  return response.text();
}

const insecure = new Agent({ rejectUnauthorized: false });

/** Before the kubeconfig exists the serving certificate is not known yet, so trust is skipped. */
function httpsGet(url: string, token: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: insecure, headers: { authorization: `Bearer ${token}` } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    });
    req.once('error', reject);
    req.end();
  });
}
