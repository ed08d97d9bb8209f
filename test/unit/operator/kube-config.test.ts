/**
 * How the operator finds the API server and its credentials: what it reads itself, and
 * what it hands to @kubernetes/client-node (exec plugins, auth providers, merged files).
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AimeshError } from '../../../lib/errors/index.js';
import { loadKubeCredentials, resolveKubeconfig } from '../../../operator/kube/config.js';

const dir = mkdtempSync(join(tmpdir(), 'aimesh-kubeconfig-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function kubeconfig(cluster: Record<string, unknown>, user: Record<string, unknown>) {
  return {
    'current-context': 'ctx',
    contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
    clusters: [{ name: 'c', cluster }],
    users: [{ name: 'u', user }],
  };
}

function resolved(document: ReturnType<typeof kubeconfig>) {
  const result = resolveKubeconfig(document, dir);
  if ('clientNodeFor' in result) throw new Error(`went to client-node for ${result.clientNodeFor}`);
  return result;
}

describe('kubeconfig credentials', () => {
  it('reads a token and an inline CA', async () => {
    const credentials = resolved(
      kubeconfig(
        {
          server: 'https://127.0.0.1:6443/',
          'certificate-authority-data': Buffer.from('CA').toString('base64'),
        },
        { token: 'abc' },
      ),
    );
    expect(credentials.server).toBe('https://127.0.0.1:6443');
    const { headers, tls } = await credentials.current();
    expect(headers).toEqual({ authorization: 'Bearer abc' });
    expect(tls.ca?.toString()).toBe('CA');
  });

  it('reads files relative to the kubeconfig: CA, client certificate and key, token file', async () => {
    for (const [name, content] of [
      ['ca.crt', 'CA-FILE'],
      ['client.crt', 'CERT'],
      ['client.key', 'KEY'],
      ['token', 'from-file\n'],
    ])
      writeFileSync(join(dir, name as string), content as string);
    const credentials = resolved(
      kubeconfig(
        { server: 'https://k8s:443', 'certificate-authority': 'ca.crt', 'tls-server-name': 'kubernetes' },
        { 'client-certificate': 'client.crt', 'client-key': join(dir, 'client.key'), tokenFile: 'token' },
      ),
    );
    const { headers, tls } = await credentials.current();
    expect(headers.authorization).toBe('Bearer from-file');
    expect([tls.ca, tls.cert, tls.key].map(String)).toEqual(['CA-FILE', 'CERT', 'KEY']);
    expect(tls.servername).toBe('kubernetes');
  });

  it('sends basic auth, and skips verification only when told to', async () => {
    const { headers, tls } = await resolved(
      kubeconfig(
        { server: 'https://k8s', 'insecure-skip-tls-verify': true },
        { username: 'admin', password: 'p:w' },
      ),
    ).current();
    expect(headers.authorization).toBe(`Basic ${Buffer.from('admin:p:w').toString('base64')}`);
    expect(tls.rejectUnauthorized).toBe(false);
  });

  it('goes through an HTTP proxy named by proxy-url', () => {
    expect(resolved(kubeconfig({ server: 'https://k8s', 'proxy-url': 'http://proxy:3128' }, {})).proxy).toBe(
      'http://proxy:3128',
    );
  });

  it('hands exec plugins, auth providers and SOCKS proxies to client-node, saying which', () => {
    expect(
      resolveKubeconfig(kubeconfig({ server: 'https://k8s' }, { exec: { command: 'aws' } }), dir),
    ).toEqual({ clientNodeFor: 'exec' });
    expect(
      resolveKubeconfig(kubeconfig({ server: 'https://k8s' }, { 'auth-provider': { name: 'oidc' } }), dir),
    ).toEqual({ clientNodeFor: 'auth-provider' });
    expect(
      resolveKubeconfig(kubeconfig({ server: 'https://k8s', 'proxy-url': 'socks5://p:1080' }, {}), dir),
    ).toEqual({ clientNodeFor: 'proxy-url socks5' });
  });

  it('names what is missing in a broken kubeconfig', () => {
    const noContext = { ...kubeconfig({ server: 'https://k8s' }, {}), 'current-context': undefined };
    expect(() => resolveKubeconfig(noContext, dir)).toThrow(
      /no current-context: set one with kubectl config use-context/,
    );
    const noServer = kubeconfig({}, {});
    expect(() => resolveKubeconfig(noServer, dir)).toThrow(AimeshError);
    expect(() => resolveKubeconfig(noServer, dir)).toThrow(/cluster c, which has no server/);
  });
});

describe('where the credentials come from', () => {
  it("uses the pod's ServiceAccount when no kubeconfig is named", async () => {
    const sa = mkdtempSync(join(dir, 'sa-'));
    writeFileSync(join(sa, 'token'), 'pod-token');
    writeFileSync(join(sa, 'ca.crt'), 'POD-CA');
    const credentials = await loadKubeCredentials({
      env: { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' },
      serviceAccountDir: sa,
    });
    expect(credentials.server).toBe('https://[fd00::1]:443');
    const { headers, tls } = await credentials.current();
    expect(headers.authorization).toBe('Bearer pod-token');
    expect(String(tls.ca)).toBe('POD-CA');
  });

  it('reads a YAML kubeconfig from $KUBECONFIG itself, and one with an exec plugin through client-node', async () => {
    const plain = join(dir, 'plain.yaml');
    writeFileSync(
      plain,
      'apiVersion: v1\ncurrent-context: ctx\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "https://k8s:6443"}}]\nusers: [{name: u, user: {token: t}}]\n',
    );
    const own = await loadKubeCredentials({ env: { KUBECONFIG: plain } });
    expect(own.source).toBe(plain);
    expect((await own.current()).headers.authorization).toBe('Bearer t');

    const exec = join(dir, 'exec.yaml');
    writeFileSync(
      exec,
      'apiVersion: v1\ncurrent-context: ctx\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "https://k8s:6443"}}]\nusers: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true}}}]\n',
    );
    const viaClientNode = await loadKubeCredentials({ env: { KUBECONFIG: exec } });
    expect(viaClientNode.server).toBe('https://k8s:6443');
    expect(viaClientNode.source).toContain('through @kubernetes/client-node');
  });

  it('says how to give credentials when there are none', async () => {
    await expect(
      loadKubeCredentials({ env: {}, serviceAccountDir: join(dir, 'absent'), home: join(dir, 'absent') }),
    ).rejects.toThrow(/pass --kubeconfig, set KUBECONFIG, or run in a pod with a ServiceAccount token/);
  });
});
