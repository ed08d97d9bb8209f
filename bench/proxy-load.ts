/**
 * A load generator in its own process, so the saga benchmark's step services do not share
 * its event loop: serves an echo upstream on the given port, and on each `run <proxy URL>` line on
 * stdin sends requests through that proxy at a fixed rate, printing p50/p99 as JSON.
 * Latency counts from the scheduled send time, so queueing shows.
 */
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { Pool } from 'undici';

const [port, path, rate, seconds] = process.argv.slice(2) as [string, string, string, string];
const BODY = JSON.stringify({ ok: true, service: 'echo', padding: 'x'.repeat(200) });

const upstream = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(BODY);
});
await new Promise<void>((resolve) => upstream.listen(Number(port), '127.0.0.1', resolve));
process.stdout.write('listening\n');

async function fixedRate(
  origin: string,
): Promise<{ p50: number; p99: number; errors: number; requests: number }> {
  const pool = new Pool(origin, { connections: 64 });
  const latencies: number[] = [];
  let errors = 0;
  const total = Number(rate) * Number(seconds);
  const start = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const scheduled = start + (i * 1000) / Number(rate);
    const wait = scheduled - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const from = Math.min(scheduled, performance.now());
    pending.push(
      pool.request({ method: 'GET', path }).then(
        async (response) => {
          await response.body.text();
          if (response.statusCode !== 200) errors++;
          latencies.push(performance.now() - from);
        },
        () => {
          errors++;
        },
      ),
    );
  }
  await Promise.all(pending);
  await pool.close();
  latencies.sort((a, b) => a - b);
  const at = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99), errors, requests: total };
}

for await (const line of createInterface({ input: process.stdin })) {
  const [command, origin] = line.trim().split(' ');
  if (command !== 'run' || !origin) continue;
  process.stdout.write(`${JSON.stringify(await fixedRate(origin))}\n`);
}
upstream.close();
