/**
 * Where the API server is and how to authenticate to it: from a kubeconfig file or, in a
 * pod, from its ServiceAccount, in controller-runtime's order (--kubeconfig, $KUBECONFIG,
 * in-cluster, ~/.kube/config).
 *
 * What almost every operator meets (a token, a token file, a client certificate, basic
 * auth, a CA, an HTTP proxy) is read here. Loading @kubernetes/client-node costs about
 * 70 MiB of resident memory (its generated models), more than the operator's whole cache
 * of 1000 AiServices, so it is loaded only for what it alone handles: exec plugins,
 * auth providers (OIDC, cloud), kubeconfigs merged from several files.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { AimeshError } from '../../lib/errors/index.js';

/** The TLS side of a connection to the API server (undici's `connect` options). */
export interface TlsSettings {
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  rejectUnauthorized?: boolean;
  servername?: string;
}

export interface KubeCredentials {
  /** https://host:port, without a trailing slash. */
  server: string;
  /** An HTTP(S) proxy to reach it through (the kubeconfig's proxy-url). */
  proxy?: string;
  /** Headers and TLS for the next request, read each time: tokens and certificates rotate. */
  current(): Promise<{ headers: Record<string, string>; tls: TlsSettings }>;
  /** Says where the credentials came from, for the start-up log. */
  readonly source: string;
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** Files (tokens, certificates) are re-read at most this often, as client-go re-reads its token. */
const REREAD_MS = 60_000;

export interface LoadOptions {
  /** --kubeconfig; else $KUBECONFIG, the pod's ServiceAccount, ~/.kube/config. */
  kubeconfig?: string;
  env?: NodeJS.ProcessEnv;
  /** The ServiceAccount folder (tests point it elsewhere). */
  serviceAccountDir?: string;
  /** Where ~/.kube/config is looked for. */
  home?: string;
}

export async function loadKubeCredentials(options: LoadOptions = {}): Promise<KubeCredentials> {
  const env = options.env ?? process.env;
  const saDir = options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  if (options.kubeconfig) return fromKubeconfigFile(options.kubeconfig);
  const fromEnv = env.KUBECONFIG?.split(':').filter(Boolean) ?? [];
  if (fromEnv.length > 1)
    // Several files are merged field by field; client-node does that merge.
    return viaClientNode(`$KUBECONFIG (${fromEnv.length} files)`, (config) => config.loadFromDefault());
  if (fromEnv.length === 1) return fromKubeconfigFile(fromEnv[0] as string);
  if (env.KUBERNETES_SERVICE_HOST && existsSync(join(saDir, 'token'))) return inCluster(env, saDir);
  const home = join(options.home ?? homedir(), '.kube', 'config');
  if (existsSync(home)) return fromKubeconfigFile(home);
  throw new AimeshError(
    'input.invalid',
    'no Kubernetes credentials: pass --kubeconfig, set KUBECONFIG, or run in a pod with a ServiceAccount token',
  );
}

function inCluster(env: NodeJS.ProcessEnv, saDir: string): KubeCredentials {
  const host = env.KUBERNETES_SERVICE_HOST as string;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  const token = rereadEvery(join(saDir, 'token'));
  // Every pod gets the CA beside its token; without it the system's CAs are used.
  const ca = existsSync(join(saDir, 'ca.crt')) ? rereadEvery(join(saDir, 'ca.crt')) : undefined;
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    source: `the pod's ServiceAccount (${saDir})`,
    current: async () => ({
      headers: { authorization: `Bearer ${token().toString('utf8').trim()}` },
      tls: ca ? { ca: ca() } : {},
    }),
  };
}

/** The parts of a kubeconfig this module reads; anything else goes to client-node. */
interface Kubeconfig {
  'current-context'?: string;
  contexts?: { name: string; context?: { cluster?: string; user?: string } }[];
  clusters?: { name: string; cluster?: Record<string, unknown> }[];
  users?: { name: string; user?: Record<string, unknown> }[];
}

const CLUSTER_FIELDS = new Set([
  'server',
  'certificate-authority',
  'certificate-authority-data',
  'insecure-skip-tls-verify',
  'tls-server-name',
  'proxy-url',
  'extensions',
]);
const USER_FIELDS = new Set([
  'token',
  'tokenFile',
  'client-certificate',
  'client-certificate-data',
  'client-key',
  'client-key-data',
  'username',
  'password',
  'extensions',
]);

async function fromKubeconfigFile(file: string): Promise<KubeCredentials> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new AimeshError('input.invalid', `cannot read the kubeconfig ${file}: ${String(error)}`);
  }
  const document = await parseKubeconfig(text, file);
  const resolved = resolveKubeconfig(document, dirname(file));
  if ('clientNodeFor' in resolved)
    return viaClientNode(`${file} (${resolved.clientNodeFor})`, (config) => config.loadFromFile(file));
  return { ...resolved, source: file };
}

async function parseKubeconfig(text: string, file: string): Promise<Kubeconfig> {
  try {
    return JSON.parse(text) as Kubeconfig;
  } catch {
    // Most kubeconfigs are YAML; the parser is loaded only for them.
    const { parse } = await import('yaml');
    try {
      return (parse(text) ?? {}) as Kubeconfig;
    } catch (error) {
      throw new AimeshError('input.invalid', `the kubeconfig ${file} is not YAML or JSON: ${String(error)}`);
    }
  }
}

/**
 * The current context's server and credentials; or, when the kubeconfig uses what only
 * client-node handles (exec plugins, auth providers, a SOCKS proxy), what that is.
 * Pure but for reading the files the kubeconfig names.
 */
export function resolveKubeconfig(
  document: Kubeconfig,
  baseDir: string,
): Omit<KubeCredentials, 'source'> | { clientNodeFor: string } {
  const contextName = document['current-context'];
  if (!contextName)
    throw new AimeshError(
      'input.invalid',
      'the kubeconfig has no current-context: set one with kubectl config use-context',
    );
  const context = document.contexts?.find((c) => c.name === contextName)?.context;
  if (!context) throw new AimeshError('input.invalid', `the kubeconfig has no context named ${contextName}`);
  const cluster = document.clusters?.find((c) => c.name === context.cluster)?.cluster;
  if (!cluster || typeof cluster.server !== 'string')
    throw new AimeshError(
      'input.invalid',
      `the kubeconfig's context ${contextName} names cluster ${String(context.cluster)}, which has no server`,
    );
  const user = document.users?.find((u) => u.name === context.user)?.user ?? {};
  const other = [
    ...Object.keys(cluster).filter((k) => !CLUSTER_FIELDS.has(k)),
    ...Object.keys(user).filter((k) => !USER_FIELDS.has(k)),
  ];
  const proxy = typeof cluster['proxy-url'] === 'string' ? cluster['proxy-url'] : undefined;
  if (proxy && !/^https?:\/\//.test(proxy)) other.push(`proxy-url ${proxy.split(':')[0]}`);
  if (other.length > 0) return { clientNodeFor: other.join(', ') };

  const path = (value: unknown) => {
    const file = String(value);
    return isAbsolute(file) ? file : join(baseDir, file);
  };
  const material = (data: unknown, file: unknown): (() => Buffer) | undefined =>
    typeof data === 'string'
      ? constant(Buffer.from(data, 'base64'))
      : typeof file === 'string'
        ? rereadEvery(path(file))
        : undefined;
  const ca = material(cluster['certificate-authority-data'], cluster['certificate-authority']);
  const cert = material(user['client-certificate-data'], user['client-certificate']);
  const key = material(user['client-key-data'], user['client-key']);
  const tokenFile = typeof user.tokenFile === 'string' ? rereadEvery(path(user.tokenFile)) : undefined;
  const token = typeof user.token === 'string' ? user.token : undefined;
  const basic =
    typeof user.username === 'string'
      ? Buffer.from(`${user.username}:${String(user.password ?? '')}`).toString('base64')
      : undefined;
  const insecure = cluster['insecure-skip-tls-verify'] === true;
  const servername = typeof cluster['tls-server-name'] === 'string' ? cluster['tls-server-name'] : undefined;
  return {
    server: cluster.server.replace(/\/+$/, ''),
    ...(proxy ? { proxy } : {}),
    current: async () => {
      const bearer = tokenFile ? tokenFile().toString('utf8').trim() : token;
      const headers: Record<string, string> = {};
      if (bearer) headers.authorization = `Bearer ${bearer}`;
      else if (basic) headers.authorization = `Basic ${basic}`;
      return {
        headers,
        tls: {
          ...(ca ? { ca: ca() } : {}),
          ...(cert ? { cert: cert() } : {}),
          ...(key ? { key: key() } : {}),
          ...(insecure ? { rejectUnauthorized: false } : {}),
          ...(servername ? { servername } : {}),
        },
      };
    },
  };
}

/**
 * client-node for what only it handles; the credentials it computes (exec plugins run,
 * tokens refreshed) are asked for before every request, as for the rest.
 */
async function viaClientNode(
  source: string,
  load: (config: import('@kubernetes/client-node').KubeConfig) => void,
): Promise<KubeCredentials> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const config = new KubeConfig();
  load(config);
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new AimeshError('input.invalid', `the kubeconfig ${source} has no current cluster`);
  if (cluster.proxyUrl && !/^https?:\/\//.test(cluster.proxyUrl))
    throw new AimeshError(
      'input.unsupported',
      `the kubeconfig's proxy-url ${cluster.proxyUrl} is not an HTTP(S) proxy; aimesh reaches the API server directly or through an HTTP(S) proxy`,
    );
  return {
    server: cluster.server.replace(/\/+$/, ''),
    ...(cluster.proxyUrl ? { proxy: cluster.proxyUrl } : {}),
    source: `${source}, through @kubernetes/client-node`,
    current: async () => {
      const https: import('node:https').RequestOptions = {};
      await config.applyToHTTPSOptions(https);
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(https.headers ?? {}))
        if (value !== undefined) headers[name.toLowerCase()] = String(value);
      if (https.auth) headers.authorization = `Basic ${Buffer.from(https.auth).toString('base64')}`;
      return {
        headers,
        tls: {
          ...(https.ca ? { ca: https.ca as string | Buffer } : {}),
          ...(https.cert ? { cert: https.cert as string | Buffer } : {}),
          ...(https.key ? { key: https.key as string | Buffer } : {}),
          ...(https.rejectUnauthorized !== undefined ? { rejectUnauthorized: https.rejectUnauthorized } : {}),
          ...(https.servername !== undefined ? { servername: https.servername } : {}),
        },
      };
    },
  };
}

function constant(value: Buffer): () => Buffer {
  return () => value;
}

/** A file's content, read again when older than REREAD_MS and changed on disk. */
function rereadEvery(file: string): () => Buffer {
  let cached: { content: Buffer; readAt: number; mtimeMs: number } | undefined;
  return () => {
    const now = Date.now();
    if (cached && now - cached.readAt < REREAD_MS) return cached.content;
    try {
      const mtimeMs = statSync(file).mtimeMs;
      if (cached?.mtimeMs !== mtimeMs) cached = { content: readFileSync(file), readAt: now, mtimeMs };
      else cached.readAt = now;
      return cached.content;
    } catch (error) {
      // A rotating file may be briefly absent: the last content stays good meanwhile.
      if (cached) return cached.content;
      throw new AimeshError(
        'input.invalid',
        `cannot read ${file}, named by the kubeconfig: ${String(error)}`,
      );
    }
  };
}
