/**
 * A real one-node Consul server for benchmarks: `-server -bootstrap-expect=1` with a data
 * folder, so every write goes through Raft and is fsync'd to disk as in production (dev
 * mode keeps everything in memory and would flatter the Consul store).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts, requireBinary, startProcess, waitFor } from '../test/env/index.js';

export interface ConsulServer {
  address: string;
  dataDir: string;
  stop: () => Promise<void>;
}

/**
 * `sessionTtlMin` lowers the servers' floor on session TTLs (Consul's default is 10s), which
 * takeover within 15 s needs: Consul invalidates a session up to 2 × TTL after its last renewal.
 */
export async function startConsulServer(sessionTtlMin = '1s'): Promise<ConsulServer> {
  const dir = mkdtempSync(join(tmpdir(), 'aimesh-consul-server-'));
  const [http, serfLan, serfWan, server] = (await freePorts(4)) as [number, number, number, number];
  const agent = startProcess(
    'consul-server',
    requireBinary('consul'),
    [
      'agent',
      '-server',
      '-bootstrap-expect=1',
      `-data-dir=${join(dir, 'data')}`,
      '-bind=127.0.0.1',
      '-client=127.0.0.1',
      '-node=aimesh-bench',
      '-log-level=warn',
      `-hcl=ports { http = ${http}, https = -1, grpc = -1, grpc_tls = -1, dns = -1, serf_lan = ${serfLan}, serf_wan = ${serfWan}, server = ${server} }`,
      `-hcl=session_ttl_min = "${sessionTtlMin}"`,
    ],
    join(dir, 'logs'),
  );
  await waitFor(
    'consul server leader',
    async () => {
      const response = await fetch(`http://127.0.0.1:${http}/v1/status/leader`);
      return response.ok && (await response.text()).length > 4;
    },
    60_000,
  );
  // The leader answers before its own node is registered in the catalog; sessions need it.
  await waitFor(
    'consul server node in the catalog',
    async () => {
      const response = await fetch(`http://127.0.0.1:${http}/v1/catalog/node/aimesh-bench`);
      return response.ok && (await response.json()) !== null;
    },
    60_000,
  );
  return {
    address: `127.0.0.1:${http}`,
    dataDir: join(dir, 'data'),
    stop: async () => {
      await agent.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
