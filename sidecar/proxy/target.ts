/**
 * Which upstream an outbound request is for, in the three ways an app can address the
 * sidecar: `/v1/invoke/<service>/<path>` (Dapr style), an absolute-form URI
 * (`HTTP_PROXY=http://127.0.0.1:4700`), or the Host header. Pure.
 */
export interface Target {
  service: string;
  /** Namespace when the caller named one (service.namespace[.svc.<domain>]). */
  namespace?: string;
  /** Path and query to send upstream. */
  path: string;
}

export type TargetResult = { ok: true; target: Target } | { ok: false; status: number; message: string };

const INVOKE_PREFIX = '/v1/invoke/';

export function resolveTarget(url: string, host: string | undefined): TargetResult {
  if (url.startsWith(INVOKE_PREFIX)) {
    const rest = url.slice(INVOKE_PREFIX.length);
    const slash = rest.search(/[/?]/);
    const service = decodeURIComponent(slash < 0 ? rest : rest.slice(0, slash));
    const path = slash < 0 ? '/' : rest[slash] === '?' ? `/${rest.slice(slash)}` : rest.slice(slash);
    return fromHost(service, path);
  }
  if (/^https?:\/\//i.test(url)) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return { ok: false, status: 400, message: `malformed absolute URI "${url}"` };
    }
    return fromHost(parsed.hostname, `${parsed.pathname}${parsed.search}`);
  }
  if (!host) {
    return {
      ok: false,
      status: 400,
      message: 'no upstream named: use /v1/invoke/<service>/<path>, an absolute URI, or a Host header',
    };
  }
  return fromHost(host.replace(/:\d+$/, ''), url || '/');
}

function fromHost(host: string, path: string): TargetResult {
  const labels = host.toLowerCase().replace(/\.$/, '').split('.');
  const [service, namespace, svc] = labels;
  if (!service || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(service)) {
    return { ok: false, status: 400, message: `"${host}" is not a service name` };
  }
  // service, service.namespace, service.namespace.svc[.cluster.local]
  if (labels.length > 2 && svc !== 'svc') {
    return {
      ok: false,
      status: 400,
      message: `"${host}" is not a service name (external hosts are not proxied)`,
    };
  }
  return {
    ok: true,
    target: { service, ...(namespace ? { namespace } : {}), path: path.startsWith('/') ? path : `/${path}` },
  };
}
