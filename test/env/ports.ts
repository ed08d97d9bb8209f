import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * Ports tests may listen on: below the kernel's ephemeral range. A port bound with port 0 comes
 * from that range, and between finding it free and a server binding it, an outgoing connection
 * can take it as its source port (seen: kube-apiserver's own connections to etcd, made before
 * it listens, took the port chosen for it, and it failed with "address already in use").
 * Ports below the range are never handed out that way. Kubernetes' NodePort range
 * (30000-32767) is left out too: the test node's kube-proxy forwards those on 127.0.0.1.
 */
function listenRange(): [number, number] {
  let ephemeralLow = 32768;
  try {
    ephemeralLow = Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
  } catch {
    // Not Linux: keep the IANA default start of the dynamic range.
  }
  const low = 10_000;
  const high = Math.min(ephemeralLow - 1, 29_999);
  return high - low >= 1000 ? [low, high] : [0, 0];
}

const [RANGE_LOW, RANGE_HIGH] = listenRange();

function tryListen(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : undefined));
    });
  });
}

/** A free TCP port on 127.0.0.1, below the ephemeral range where the kernel allows it. */
export async function freePort(): Promise<number> {
  if (RANGE_HIGH > RANGE_LOW) {
    for (let attempt = 0; attempt < 100; attempt++) {
      const port = RANGE_LOW + Math.floor(Math.random() * (RANGE_HIGH - RANGE_LOW + 1));
      const free = await tryListen(port);
      if (free !== undefined) return free;
    }
  }
  const any = await tryListen(0);
  if (any === undefined) throw new Error('no free port on 127.0.0.1');
  return any;
}

export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}
