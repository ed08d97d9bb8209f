/**
 * `npm run bench:node`: the aimesh image size, the one-node cluster's start and teardown
 * times, and the time from `kubectl apply` of the suoke-life example (fitted to one node, see
 * test/node/helpers.ts) to every pod Ready, with the operator installed by Helm from the
 * local image. Writes them to BENCHMARKS.md.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { buildAimeshImage, imageCacheDir } from '../image/build.js';
import { installOperatorChart } from '../test/env/helm.js';
import { testAppImage } from '../test/env/images.js';
import { nodeUnavailableReason, startCluster } from '../test/env/node.js';
import { SUOKE, WAVE, applyInWaves, suokeLifeForOneNode } from '../test/node/helpers.js';
import { table, writeSection } from './report.js';

const reason = nodeUnavailableReason();
if (reason) {
  console.error(`bench:node cannot run: ${reason}`);
  process.exit(1);
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
// A cold image build: the bench uses its own image cache so the figure is the full build.
const benchImageCache = join(imageCacheDir(), `bench-${process.pid}`);
process.env.AIMESH_IMAGE_CACHE = benchImageCache;
const imageBegan = Date.now();
const image = await buildAimeshImage();
const imageMs = Date.now() - imageBegan;
const example = suokeLifeForOneNode();
const app = await testAppImage(example.ports);

const clusterBegan = Date.now();
const cluster = await startCluster((m) => console.log(`[bench] ${m}`));
const clusterMs = Date.now() - clusterBegan;
let teardownMs = 0;
try {
  await cluster.importImage(image.tarball, image.name);
  await cluster.importImage(app.tarball, app.name, example.images);
  const helmBegan = Date.now();
  const installed = await installOperatorChart(cluster.kubeconfig);
  if (installed.code !== 0) throw new Error(`helm install: ${installed.stderr}`);
  const helmMs = Date.now() - helmBegan;

  await cluster.kubectl(['create', 'namespace', SUOKE]);
  const services = example.resources.filter((r) => r.kind === 'AiService').length;
  const applyBegan = Date.now();
  await applyInWaves(cluster, example.resources);
  const readyMs = Date.now() - applyBegan;

  const teardownBegan = Date.now();
  await cluster.stop();
  teardownMs = Date.now() - teardownBegan;

  const rows: (string | number)[][] = [
    [`image ${image.name} (tarball, gzip layers)`, `${(image.bytes / 1e6).toFixed(1)} MB`],
    ['image build, empty image cache (tsc, npm ci --omit=dev, crane)', seconds(imageMs)],
    ['cluster start: control plane, Consul, node Ready with CoreDNS and kube-proxy', seconds(clusterMs)],
    ['  of which control plane and Consul', seconds(cluster.timings.controlPlane)],
    ['  of which the node', seconds(cluster.timings.node)],
    ['helm install of the operator until its 2 pods are Ready', seconds(helmMs)],
    [
      `kubectl apply of suoke-life until all ${services} pods are Ready (app + native sidecar; ${WAVE} services at a time)`,
      seconds(readyMs),
    ],
    ['teardown', seconds(teardownMs)],
  ];
  writeSection(
    'node-cluster',
    'One-node cluster: image, start, suoke-life apply to Ready',
    'npm run bench:node',
    `${table(['figure', 'value'], rows)}\n\nThe cluster of test/env/node.ts (containerd + runc, CNI bridge, kubelet, kube-scheduler, kube-proxy, CoreDNS; one node). suoke-life runs one replica per AiService with small requests, since its 44 pods and ~14 CPUs of requests do not fit one 2-core node; every pod is the test app (test/env/apps/app.ts) beside the aimesh sidecar from the image above. The services are applied a few at a time (AIMESH_NODE_WAVE): started all at once, their 40 Node processes on 2 cores start too slowly for the sidecar's liveness probe (about 30 s, no startup allowance) and restart one another.\n`,
  );
  console.log(table(['figure', 'value'], rows));
} finally {
  if (teardownMs === 0) await cluster.stop();
  rmSync(benchImageCache, { recursive: true, force: true });
}
