/** A real Consul agent in dev mode (a one-node server) on free loopback ports. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireBinary } from './binaries.js';
import { freePorts } from './ports.js';
import { startProcess, waitFor, type ManagedProcess } from './processes.js';

export interface ConsulAgentInfo {
  /** 127.0.0.1:<port>, the HTTP API. */
  address: string;
  httpPort: number;
  pid: number;
}

export interface ConsulAgent extends ConsulAgentInfo {
  /** Stops the agent (as an outage would) and starts it again on the same ports. */
  stopAgent: () => Promise<void>;
  startAgent: () => Promise<void>;
  stop: () => Promise<void>;
}

export interface ConsulOptions {
  /**
   * Where the HTTP API listens (default 127.0.0.1 on a free port). A node's agent serves pods
   * at <node address>:8500, where the sidecars look for their node's agent.
   */
  clientAddress?: string;
  httpPort?: number;
}

export async function startConsul(options: ConsulOptions = {}): Promise<ConsulAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'aimesh-consul-'));
  const [freeHttp, serfLan, serfWan, server] = (await freePorts(4)) as [number, number, number, number];
  const http = options.httpPort ?? freeHttp;
  const client = options.clientAddress ?? '127.0.0.1';
  let agent: ManagedProcess | undefined;
  const start = async () => {
    agent = startProcess(
      'consul',
      requireBinary('consul'),
      [
        'agent',
        '-dev',
        '-bind=127.0.0.1',
        `-client=${client}`,
        '-node=aimesh-test',
        '-log-level=warn',
        `-hcl=ports { http = ${http}, https = -1, grpc = -1, grpc_tls = -1, dns = -1, serf_lan = ${serfLan}, serf_wan = ${serfWan}, server = ${server} }`,
      ],
      join(dir, 'logs'),
    );
    await waitFor('consul leader', async () => {
      const response = await fetch(`http://${client}:${http}/v1/status/leader`);
      return response.ok && (await response.text()).length > 4;
    });
  };
  await start();
  const handle: ConsulAgent = {
    address: `${client}:${http}`,
    httpPort: http,
    pid: agent?.pid ?? -1,
    stopAgent: async () => {
      await agent?.stop();
      agent = undefined;
    },
    startAgent: async () => {
      await start();
      handle.pid = agent?.pid ?? -1;
    },
    stop: async () => {
      await agent?.stop();
      if (!process.env.AIMESH_KEEP_TESTENV) rmSync(dir, { recursive: true, force: true });
    },
  };
  return handle;
}
